"""blipexp: experiment-tracked fine-tuning of BLIP image-captioning models.

What an experiment file needs is importable from here: `from blipexp import ExperimentSpec, FloatRange`. The
packages, lowest layer first: runtime, experiment, data, model, scoring, tracking, training, serving, registry,
sweep, then cli and bench (docs/development.md: Where things go). Files written for the first, flat layout import
modules that moved (`blipexp.spec`, `blipexp.search_space`, ...): those imports still work, with a
FutureWarning naming the new path (shown by default: the files are users', not libraries).
"""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from .experiment.catalog import load_experiment
from .experiment.presets import HUB_DATASET, HUB_MODEL
from .experiment.search_space import Choice, FloatRange, IntRange, SearchDim
from .experiment.spec import ExperimentSpec

__version__ = "0.1.0"
__all__ = ["HUB_DATASET", "HUB_MODEL", "Choice", "ExperimentSpec", "FloatRange", "IntRange", "SearchDim",
           "load_experiment"]

# The first layout's modules by their new home (registry, serving and cli kept their names as packages)
MOVED = {
    "access": "tracking.access", "assess": "scoring.assess", "batcher": "serving.batcher",
    "callbacks": "training.callbacks", "catalog": "experiment.catalog", "distributed": "runtime.distributed",
    "environment": "runtime.environment", "eval_cache": "scoring.eval_cache", "evaluation": "scoring.evaluation",
    "evidence": "scoring.evidence", "feature_cache": "model.feature_cache", "fields": "experiment.fields",
    "generation": "model.generation", "hub": "data.hub", "interrupts": "runtime.interrupts",
    "liveness": "runtime.liveness", "locks": "runtime.locks", "metrics": "scoring.metrics",
    "model_card": "registry.model_card", "modeling": "model.modeling", "precision": "model.precision",
    "pretrain": "model.pretrain", "progress": "runtime.progress", "pyfunc_model": "serving.pyfunc_model",
    "rerun": "cli.rerun", "resume": "training.resume", "runner": "cli.run", "search_space": "experiment.search_space",
    "secrecy": "runtime.secrecy", "serve_settings": "serving.serve_settings", "spec": "experiment.spec",
    "tiny": "model.tiny", "train": "training.train", "trainer": "training.trainer",
    "trainer_args": "experiment.trainer_args",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `blipexp.<old name>` as the module at its new path (the same module object, not a copy)."""

    def __init__(self) -> None:
        self.specs = {}  # the moved modules' own specs, which the import system replaces by the alias's

    def find_spec(self, fullname, path=None, target=None):
        old = fullname.removeprefix(f"{__name__}.")
        return importlib.util.spec_from_loader(fullname, self) if old in MOVED and old != fullname else None

    def create_module(self, spec):
        new = f"{__name__}.{MOVED[spec.name.removeprefix(f'{__name__}.')]}"
        warnings.warn(f"{spec.name} moved to {new}: import it from there (or the public names from {__name__})",
                      FutureWarning, stacklevel=2)
        module = importlib.import_module(new)
        self.specs[new] = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self.specs[module.__name__]


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())  # last: a module that exists is always found first
