"""Versions and aliases: a trained model logged and registered (register.py), versions listed and looked up
(versions.py), an alias promoted on evidence (promotion.py), each version's model card (model_card.py). Imports the
layers below it: runtime, experiment, data, model, scoring, tracking, training, serving."""
from .promotion import Judge, Judgement, promote
from .register import REQUIRED_PACKAGES, log_and_register, pip_requirements
from .versions import format_models, list_models, tag_version, tags_of, version_of_run, version_tagged, versions_of

__all__ = ["REQUIRED_PACKAGES", "Judge", "Judgement", "format_models", "list_models", "log_and_register",
           "pip_requirements", "promote", "tag_version", "tags_of", "version_of_run", "version_tagged", "versions_of"]
