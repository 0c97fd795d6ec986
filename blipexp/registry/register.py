"""Registering a model: log a trained BLIP folder as an MLflow pyfunc model and register it as a version.

A version can only be registered from a LOGGED model, so `log_and_register` first logs the trial's
model folder, as a `BlipCaptioner` pyfunc (blipexp.serving), into the trial's own run (re-opened for the
purpose; its status and end time are restored afterwards), then registers it.

The pyfunc is logged as models-from-code (serving/pyfunc_model.py, the file MLflow runs to load it), so loading
executes no pickled code. Loading needs `blipexp` importable, besides the pinned requirements: mlflow, cloudpickle,
torch, transformers, pillow, pandas.
Each version carries its model card (model_card.py) as artifact README.md, which `export` copies.
"""
from __future__ import annotations

import io
import json
import sys
import tempfile
from contextlib import contextmanager, redirect_stderr
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from .. import tracking
from ..runtime import secrecy
from ..serving.captioner import (
    ARTIFACT_KEY,
    CARD_KEY,
    DEFAULT_GENERATION,
    GENERATION_KEY,
    MODEL_CODE,
    example_image_base64,
    signature,
)

ADAPTER_KEY = "adapter"  # a LoRA version's adapter alone, beside the merged model
REQUIRED_PACKAGES = ("mlflow", "cloudpickle", "torch", "transformers", "pillow", "pandas")


def pip_requirements() -> list[str]:
    """Pinned from the installed versions, so MLflow need not infer them (a subprocess, slow, may hit the network)."""
    pins = []
    for package in REQUIRED_PACKAGES:
        version = metadata.version(package).split("+")[0]  # drop local tags such as +cpu
        pins.append(f"{package}=={version}")
    return pins


def log_and_register(model_dir: Path, *, registered_model: str, run_id: str, tags: dict[str, str],
                     description: str, generation: dict, adapter_dir: Path | None = None,
                     card: str | None = None) -> ModelVersion:
    """Log model_dir as a BlipCaptioner pyfunc into run `run_id`, register it, tag and describe the version.

    `card`: the model card's Markdown (model_card.render), logged as artifact README.md.
    `adapter_dir`: a LoRA trial's adapter alone (saved with save_pretrained), logged beside the merged model as
    artifact "adapter": small, to apply again to the base model with peft; serving does not read it."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"{model_dir} holds no model saved with save_pretrained (no config.json): "
                         "pass the trial's model_dir")
    if adapter_dir is not None and not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise ValueError(f"{adapter_dir} holds no LoRA adapter (no adapter_config.json): pass the trial's adapter "
                         "folder (beside its model_dir), or none")
    from ..runtime.progress import no_weight_progress_bars  # transformers: not for promote's sake

    with tracking.no_artifact_progress_bar(), no_weight_progress_bars():  # MLflow loads the model back to check it
        model_info = _log_in_run(run_id, lambda: _log_pyfunc(model_dir, generation, adapter_dir, card))
    with _without_registry_chatter():
        version = mlflow.register_model(model_info.model_uri, registered_model,
                                        tags={key: str(value) for key, value in tags.items()})
    client = MlflowClient()
    if description:
        client.update_model_version(registered_model, version.version, description=description)
    return client.get_model_version(registered_model, version.version)


# what mlflow.register_model prints to stderr on success: blipexp's summary says it once, as `registered  NAME version N`
_CHATTER = ("Successfully registered model ", "Created version ", "Registered model ")


@contextmanager
def _without_registry_chatter():
    """Keep MLflow's registration notices off the console; anything else it prints (a warning) still shows."""
    printed = io.StringIO()
    try:
        with redirect_stderr(printed):
            yield
    finally:
        kept = [line for line in printed.getvalue().splitlines() if line and not line.startswith(_CHATTER)]
        if kept:
            print("\n".join(kept), file=sys.stderr)


def _log_pyfunc(model_dir: Path, generation: dict, adapter_dir: Path | None, card: str | None) -> Any:
    unknown = set(generation or {}) - set(DEFAULT_GENERATION)
    if unknown:
        raise ValueError(f"unknown generation setting(s) {sorted(unknown)}: use {sorted(DEFAULT_GENERATION)}")
    settings = {**DEFAULT_GENERATION, **(generation or {})}
    with tempfile.TemporaryDirectory() as tmp:
        settings_file = Path(tmp) / "generation.json"
        settings_file.write_text(json.dumps(settings, indent=2))
        artifacts = {ARTIFACT_KEY: str(model_dir), GENERATION_KEY: str(settings_file)}
        if adapter_dir is not None:
            artifacts[ADAPTER_KEY] = str(adapter_dir)
        if card is not None:
            card_file = Path(tmp) / "README.md"
            card_file.write_text(card)
            artifacts[CARD_KEY] = str(card_file)
        return mlflow.pyfunc.log_model(
            name=ARTIFACT_KEY,
            python_model=str(MODEL_CODE),
            artifacts=artifacts,
            signature=signature(settings),
            input_example=pd.DataFrame({"image": [example_image_base64()]}),
            pip_requirements=pip_requirements(),
        )


def _log_in_run(run_id: str, log):
    """Call `log` with run_id active. A finished run is re-opened, then its status and end time restored."""
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ValueError(f"run {run_id!r} not found in {secrecy.masked(mlflow.get_tracking_uri())}: "
                         "pass the trial's run_id and configure the same home") from exc
    if run.info.lifecycle_stage == "deleted":
        raise ValueError(f"run {run_id} is deleted: restore it (mlflow runs restore) or register another run")
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        return log()
    status, end_time = run.info.status, run.info.end_time
    with _in_experiment(run.info.experiment_id), mlflow.start_run(run_id=run_id, nested=active is not None):
        result = log()
    if status == "RUNNING":  # active in another process: leave it running
        client.update_run(run_id, status="RUNNING")
    else:
        client.set_terminated(run_id, status=status, end_time=end_time)
    return result


@contextmanager
def _in_experiment(experiment_id: str):
    """MLflow re-opens a run only while its experiment is the active one (a run of another experiment than the
    last one set, e.g. by an earlier `blipexp run` in the same process, is refused): set it, then restore."""
    from mlflow.tracking import fluent

    # MLflow has no public getter for the experiment set_experiment chose (tests/test_private_apis.py checks it)
    previous = fluent._active_experiment_id
    if previous in (None, experiment_id):
        yield
        return
    mlflow.set_experiment(experiment_id=experiment_id)
    try:
        yield
    finally:
        mlflow.set_experiment(experiment_id=previous)
