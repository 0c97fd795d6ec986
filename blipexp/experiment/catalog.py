"""The experiment catalog: experiments/*.py, loaded by file path (the folder is not a package).

Each file defines one ExperimentSpec subclass; the file's stem is the experiment's name. Files are imported
as modules of a synthetic package, so an experiment can build on another with a relative import:
`from .football_baseline import FootballBaseline`.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import os
import sys
import types
from pathlib import Path

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


def _package_for(directory: Path) -> str:
    """A synthetic package whose __path__ is the experiments folder (one per folder)."""
    package = "_blipexp_experiments_" + hashlib.sha1(str(directory).encode()).hexdigest()[:10]
    if package not in sys.modules:
        module = types.ModuleType(package)
        module.__path__ = [str(directory)]
        sys.modules[package] = module
    return package
