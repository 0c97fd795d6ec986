"""Versions and aliases: a trained model logged and registered, versions listed and looked up, an alias promoted
on evidence, each version's model card. Imports every layer below sweep but training."""
from .register import (
    REQUIRED_PACKAGES,
    Judge,
    Judgement,
    format_models,
    list_models,
    log_and_register,
    pip_requirements,
    promote,
    tag_version,
    tags_of,
    version_of_run,
    version_tagged,
    versions_of,
)

__all__ = ["REQUIRED_PACKAGES", "Judge", "Judgement", "format_models", "list_models", "log_and_register",
           "pip_requirements", "promote", "tag_version", "tags_of", "version_of_run", "version_tagged", "versions_of"]
