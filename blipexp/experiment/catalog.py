"""The experiment catalog: experiments/*.py, loaded by file path (the folder is not a package).

Each file defines one ExperimentSpec subclass; the file's stem is the experiment's name. Files are imported
as modules of a synthetic package, so an experiment can build on another with a relative import:
`from .football_baseline import FootballBaseline`. `drift_from_file` says how a file changed since a spec was logged.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import os
import sys
import types
from pathlib import Path
from typing import Any

from . import trainer_args
from .spec import ExperimentSpec

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def experiments_dir(explicit: str | os.PathLike | None = None) -> Path:
    """--experiments, else $BLIPEXP_EXPERIMENTS, else ./experiments, else the one beside the blipexp package."""
    chosen = explicit or os.environ.get("BLIPEXP_EXPERIMENTS")
    if chosen:
        path = Path(chosen).expanduser().resolve()
        if not path.is_dir():
            raise ValueError(f"experiments folder {path} does not exist: pass --experiments DIR with your experiment files")
        return path
    local = Path("experiments").resolve()
    return local if local.is_dir() else PACKAGE_ROOT / "experiments"


def names(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.py") if not p.name.startswith("_"))


def load_class(name: str, directory: Path) -> type[ExperimentSpec]:
    """Import experiments/<name>.py and return the one ExperimentSpec subclass it defines."""
    path = directory / f"{name}.py"
    if not path.is_file():
        known = names(directory)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known) or 'none'}"
        raise ValueError(f"no experiment {name!r} in {directory}: {hint}")
    try:
        module = importlib.import_module(f"{_package_for(directory)}.{name}")
    except ValueError as exc:  # a spec subclass that fails its own checks
        raise ValueError(f"{path.name}: {exc}") from exc
    except Exception as exc:
        raise ValueError(f"{path.name} failed to import: {type(exc).__name__}: {exc}") from exc
    defined = [obj for obj in vars(module).values()
               if isinstance(obj, type) and issubclass(obj, ExperimentSpec) and obj.__module__ == module.__name__]
    if len(defined) != 1:
        found = ", ".join(c.__name__ for c in defined) or "none"
        raise ValueError(f"{path.name} must define exactly one ExperimentSpec subclass (found: {found})")
    cls = defined[0]
    cls.name = name
    return cls


def load(name: str, directory: Path) -> ExperimentSpec:
    """The experiment's spec with its defaults, validated."""
    cls = load_class(name, directory)
    try:
        return cls()
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc


def load_experiment(name: str, folder: str | os.PathLike | None = None) -> ExperimentSpec:
    """Experiment `name`'s spec with its defaults, from `folder` (default: as `experiments_dir` finds it)."""
    return load(name, experiments_dir(folder))


def _package_for(directory: Path) -> str:
    """A synthetic package whose __path__ is the experiments folder (one per folder)."""
    package = "_blipexp_experiments_" + hashlib.sha1(str(directory).encode()).hexdigest()[:10]
    if package not in sys.modules:
        module = types.ModuleType(package)
        module.__path__ = [str(directory)]
        sys.modules[package] = module
    return package


def drift_from_file(spec: ExperimentSpec, experiments: str | None, overrides: tuple[str, ...]) -> list[str]:
    """Where today's experiment file differs from a logged spec (`rerun` prints it, never applies it)."""
    directory = experiments_dir(experiments)
    if not spec.name or spec.name not in names(directory):
        return [f"the experiment file {spec.name or '(unnamed)'}.py is gone: training from the logged spec alone"]
    loaded = load(spec.name, directory)
    # the log does not say whether --tiny was passed: the file's spec with or without it, whichever is closer
    changed, now = min((_changed(spec, candidate, overrides) for candidate in (loaded, loaded.tiny())),
                       key=lambda found: len(found[0]))
    logged = spec.to_dict()
    if not changed:
        return [f"experiments/{spec.name}.py gives the same spec today"]
    return [f"experiments/{spec.name}.py differs from the logged spec (edited since, or --set then); training the "
            "logged spec:"] + [
        f"  {key}: {logged[key]!r} logged, {now[key]!r} in the file now" for key in changed]


def _changed(spec: ExperimentSpec, today: ExperimentSpec, overrides: tuple[str, ...]):
    """The fields where `today` (an experiment file's spec) differs from the logged `spec`, and today's values."""
    today = today.with_overrides(overrides)
    if today.search_space():  # a sweep's fields searched are the trial's values, not the file's
        today = today.replace(**{key: _value(spec, key) for key in today.search_space()})
    if not today.mlflow_experiment and spec.mlflow_experiment == today.experiment_name:
        today = today.replace(mlflow_experiment=spec.mlflow_experiment)  # the logged spec names it explicitly
    logged, now = spec.to_dict(), today.to_dict()
    return [key for key in logged if key in now and logged[key] != now[key]], now


def _value(spec: ExperimentSpec, key: str) -> Any:
    """A field's value, or a trainer entry's for a `trainer.<name>` key."""
    if key.startswith(trainer_args.PREFIX):
        return spec.trainer[key[len(trainer_args.PREFIX):]]
    return getattr(spec, key)
