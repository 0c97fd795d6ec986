"""What evaluating a model reads from and writes to the MLflow store: a run's model as a model to score (its
spec.json, its data fingerprint, the images its data manifest says it learnt from), and an evaluation logged as a
run of its own, linked to the version it scored."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import mlflow

from ..data import manifest
from ..experiment.spec import ExperimentSpec
from ..model import generation
from ..scoring.assess import Evaluation, Target
from .runs import Run, new_run
from .store import use_experiment

RUN_ID = re.compile(r"[0-9a-f]{32}")


def run_target(run_id: str, home: Path) -> Target:
    """Run `run_id`'s model folder in `home`, with the spec it logged and the images its data manifest lists."""
    folder = home / "checkpoints" / run_id / "model"
    if not folder.is_dir():
        raise ValueError(f"run {run_id} has no model folder in {home} (sweeps keep the best trial's only): evaluate "
                         "its registered version instead (python -m blipexp models), or pass --home where it trained")
    fingerprint = Run(run_id).read().data.tags.get("data_fingerprint")
    return Target(run_id, logged_spec(run_id), fingerprint, lambda scratch: folder, run_id=run_id,
                  learnt=lambda: learnt_images(run_id))


def logged_spec(run_id: str) -> ExperimentSpec:
    """The spec a run trained with, from its spec.json (fields this blipexp no longer has are dropped), as a class
    named like its experiment's (its `name` the experiment's, for run names and tags), not today's file."""
    try:
        experiment = mlflow.get_experiment(Run(run_id).read().info.experiment_id).name
    except mlflow.exceptions.MlflowException as exc:
        raise ValueError(f"no run {run_id} in this store: check the id, or pass --home where it trained") from exc
    logged = Run(run_id).logged_dict("spec.json")
    if not logged or "spec" not in logged:
        raise ValueError(f"run {run_id} has no spec.json: it was not made by blipexp")
    known = {f.name for f in dataclasses.fields(ExperimentSpec)}
    values = {key: value for key, value in logged["spec"].items() if key in known}
    named = type(logged.get("class") or "LoggedSpec", (ExperimentSpec,), {"name": logged.get("experiment") or ""})
    return named(**{**values, "mlflow_experiment": values.get("mlflow_experiment") or experiment})


def learnt_images(run_id: str) -> set[str]:
    """The digests of the images run `run_id` trained or selected on, as its data manifest lists them (none
    logged: an empty set)."""
    logged = Run(run_id).logged_dict(manifest.ARTIFACT) or {}
    return {digest for digest, _, held in logged.get("images", {}).values() if held != "test" and digest}


def log_evaluation(target: Target, evaluation: Evaluation, home: Path) -> str:
    """An MLflow run holding the evaluation (metrics with intervals, signature, the per-image table), in the
    model's experiment, tagged with the version or run it scored and linked to the version's logged model."""
    scores, split = evaluation.scores, evaluation.scores.split
    use_experiment(target.spec.experiment_name, home)
    tags = {"blipexp.role": "evaluation", "evaluated_model": target.label, "data_fingerprint": evaluation.fingerprint,
            f"{split}_signature": evaluation.signature, "profile": target.spec.profile,
            **({"evaluated_run_id": target.run_id} if target.run_id else {}),
            **({"evaluated_version": f"{target.version.name}/{target.version.version}"} if target.version else {})}
    with new_run(f"evaluate-{split}", tags=tags) as run:
        run.params({"split": split, "images": len(scores.keys), "cached": evaluation.cached,
                    "bootstrap_resamples": target.spec.bootstrap_resamples, **generation.settings(target.spec)})
        run.metrics({**{f"{split}_{k}": v for k, v in scores.metrics.items()},
                     **{f"{split}_{k}_ci_{side}": getattr(i, side)
                        for k, i in evaluation.intervals.items() for side in ("low", "high")}})
        run.table(scores.table(), f"per_image/{split}.json")
        model_id = logged_model_id(target.version) if target.version is not None else None
        if model_id:
            run.link_model(model_id)
    return run.id


def logged_model_id(version) -> str | None:
    """The MLflow 3 logged model behind a registered version: its model_id, which a sqlite store leaves empty, else
    the id its source names (models:/m-...)."""
    source = version.source or ""
    return version.model_id or (source[len("models:/"):] if source.startswith("models:/m-") else None)
