"""MLflow setup and run lifecycle: the store lives in the blipexp home folder (default ./mlruns).

MLflow 3 refuses the old file store, so runs and the registry go to `sqlite:///<home>/mlflow.db` and
artifacts to `<home>/artifacts/`, which each experiment is created with (otherwise MLflow would put them
in ./mlartifacts of whatever directory the process started in).
"""
from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import mlflow

from .spec import ExperimentSpec

DEFAULT_HOME = "mlruns"


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """The folder holding all run state: explicit argument, else $BLIPEXP_HOME, else ./mlruns."""
    return Path(home or os.environ.get("BLIPEXP_HOME") or DEFAULT_HOME).expanduser().resolve()


def tracking_uri(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


def configure(home: Path) -> str:
    """Point MLflow (tracking and registry) at the home folder; fail clearly if it cannot be written."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"run-state folder {home} is not writable ({exc.strerror}): "
                         "pass --home DIR or set BLIPEXP_HOME to a writable folder") from exc
    uri = tracking_uri(home)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def use_experiment(name: str, home: Path) -> str:
    """Select the MLflow experiment `name`, creating it with its artifacts under home/artifacts."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        artifacts = (home / "artifacts").as_uri()
        try:
            experiment_id = mlflow.create_experiment(name, artifact_location=artifacts)
        except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel worker
            experiment_id = mlflow.get_experiment_by_name(name).experiment_id
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags(spec: ExperimentSpec, data_fingerprint: str) -> dict[str, str]:
    return {
        "blipexp.experiment": spec.name or type(spec).__name__,
        "profile": "tiny" if spec.is_tiny else "full",
        "git_commit": git_commit(),
        "data_fingerprint": data_fingerprint,
        "mlflow.note.content": spec.hypothesis,  # shown as the run's description in the UI
    }


@contextmanager
def start_run(spec: ExperimentSpec, *, run_name: str, tags: dict[str, str], nested: bool = False) -> Iterator[Any]:
    """An MLflow run holding the resolved spec as params and as spec.json; ends FAILED if the body raises."""
    with mlflow.start_run(run_name=run_name, tags=tags, nested=nested) as run:
        resolved = spec.to_dict()
        mlflow.log_params({k: _param(v) for k, v in resolved.items()})
        mlflow.log_dict({"experiment": spec.name, "class": type(spec).__name__, "spec": resolved}, "spec.json")
        yield run


def _param(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def ui_command(home: Path) -> str:
    return f"python -m blipexp ui --home {home}   (or: mlflow ui --backend-store-uri {tracking_uri(home)})"
