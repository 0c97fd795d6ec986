"""Model registry: log a trained BLIP folder as an MLflow pyfunc model, register it, promote it by alias.

MLflow 3 deprecates registry stages, so deployment targets are aliases (`models:/<name>@champion`).
A version can only be registered from a LOGGED model, so `log_and_register` first logs the trial's
model folder, as a `BlipCaptioner` pyfunc (blipexp.serving), into the trial's own run (re-opened for the
purpose; its status and end time are restored afterwards), then registers it.

The pyfunc is logged as models-from-code (blipexp/pyfunc_model.py, the file MLflow runs to load it), so loading
executes no pickled code. Loading needs `blipexp` importable, besides the pinned requirements: mlflow, cloudpickle,
torch, transformers, pillow, pandas.
Each version carries its model card (blipexp.model_card) as artifact README.md, which `export` copies.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from . import locks, secrecy, tracking
from .serving import ARTIFACT_KEY, CARD_KEY, DEFAULT_GENERATION, GENERATION_KEY, example_image_base64, signature

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")  # what MLflow runs to load a version (models-from-code)
ADAPTER_KEY = "adapter"  # a LoRA version's adapter alone, beside the merged model
PROMOTE_LOCK_TIMEOUT_S = 300  # loading a real BLIP for the check takes seconds to a minute
PROMOTE_ATTEMPTS = 5  # judgements against a holder that another promote replaced meanwhile
REQUIRED_PACKAGES = ("mlflow", "cloudpickle", "torch", "transformers", "pillow", "pandas")


# --------------------------------------------------------------------------- logging and registering

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

    `card`: the model card's Markdown (blipexp.model_card.render), logged as artifact README.md.
    `adapter_dir`: a LoRA trial's adapter alone (saved with save_pretrained), logged beside the merged model as
    artifact "adapter": small, to apply again to the base model with peft; serving does not read it."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"{model_dir} holds no model saved with save_pretrained (no config.json): "
                         "pass the trial's model_dir")
    if adapter_dir is not None and not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise ValueError(f"{adapter_dir} holds no LoRA adapter (no adapter_config.json): pass the trial's adapter "
                         "folder (beside its model_dir), or none")
    from .progress import no_weight_progress_bars  # transformers: not for promote's sake

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


# --------------------------------------------------------------------------- listing

def list_models(name: str | None = None) -> list[dict[str, Any]]:
    """Registered versions (of one model, or all) with tags and aliases, newest first."""
    client = MlflowClient()
    models = [_registered_model(client, name)] if name else list(client.search_registered_models())
    rows = []
    for model in models:
        aliases_of: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases_of.setdefault(str(version), []).append(alias)
        for version in versions_of(client, model.name):
            rows.append({
                "name": model.name,
                "version": str(version.version),
                "aliases": sorted(aliases_of.get(str(version.version), [])),
                "objective": version.tags.get("objective"),
                "run_id": version.run_id,
                "created": _iso(version.creation_timestamp),
                "created_ms": version.creation_timestamp,
                "tags": dict(version.tags),
                "description": version.description or "",
            })
    rows.sort(key=lambda r: (r["created_ms"] or 0, r["name"], int(r["version"])), reverse=True)
    return rows


def format_models(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of list_models() rows."""
    if not rows:
        return "no registered models: register one with log_and_register (or `blipexp run`)"
    header = ("name", "version", "aliases", "objective (val)", "test [95% interval]", "created (UTC)", "run_id")
    lines = [(r["name"], r["version"], ",".join(r["aliases"]) or "-", _short(r["objective"]),
              _test_objective(r["tags"]), r["created"][:19], r["run_id"] or "-") for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    render = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([render(header), render(["-" * w for w in widths]), *map(render, lines)])


def _test_objective(tags: dict[str, str]) -> str:
    """The objective metric on the test split with its interval, as the version was tagged when registered."""
    key = tags.get("objective_metric", "")
    value = tags.get(f"test_{key}")
    if value is None:
        return "-"
    low, high = tags.get(f"test_{key}_ci_low"), tags.get(f"test_{key}_ci_high")
    return _short(value) + (f" [{_short(low)}, {_short(high)}]" if low and high else "")


def _short(value: str | None) -> str:
    if value is None:
        return "-"
    try:
        return f"{float(value):.4f}"
    except ValueError:
        return value


def _iso(timestamp_ms: int | None) -> str:
    if not timestamp_ms:
        return ""
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- promotion

@dataclass(frozen=True)
class Judgement:
    """What a promotion's check found: a refusal (None: the candidate may take the alias), the report to print, and
    the tags recording the evidence on the candidate."""

    refusal: str | None
    report: str
    tags: dict[str, str]


# judge(candidate, holder): the evidence that the candidate may replace the holder (blipexp.assess.promotion_judge)
Judge = Callable[[ModelVersion, ModelVersion], Judgement]


def promote(name: str, version: str, alias: str = "champion", force: bool = False,
            judge: Judge | None = None, echo: Callable[[str], None] = print) -> str:
    """Point `alias` at `version` if the judge lets it replace the current holder (or `force`) and it loads;
    return a message. The judge's report is passed to `echo`; its evidence is tagged on the candidate.

    The comparison runs first (it may caption images: seconds to minutes); the alias is then read again and moved
    under a file lock, so two promotes at once act one after the other (on one machine). A holder changed meanwhile
    is never replaced on evidence about another: the candidate is judged again against the new one."""
    client = MlflowClient()
    _registered_model(client, name)  # a clear error for an unknown name
    version = str(version)
    candidate = _version(client, name, version)
    for _ in range(PROMOTE_ATTEMPTS):
        holder = _alias_holder(client, name, alias)
        if holder is not None and holder == version:
            return f"{name}@{alias} already points to version {version}: nothing changed"
        judgement = judge(candidate, _version(client, name, holder)) if judge and holder is not None else None
        if judgement is not None:
            echo(judgement.report)
            if judgement.refusal and not force:
                raise ValueError(f"{judgement.refusal}; nothing changed (--force promotes anyway)")
        with _promote_lock():
            if _alias_holder(client, name, alias) != holder:
                continue  # another promote moved it meanwhile: judge against the new holder
            _check_loads(name, version)
            client.set_registered_model_alias(name, alias, version)
            forced = bool(judgement and judgement.refusal)
            record = {**(judgement.tags if judgement else {}), **({"promote_forced": str(forced)} if judgement else {}),
                      "promoted_at": datetime.now(timezone.utc).isoformat(), f"previous_{alias}": holder or "none"}
            for key, value in record.items():
                client.set_model_version_tag(name, version, key, value)
        was = f"version {holder}" if holder is not None else "nothing"
        return f"{name}@{alias} -> version {version} (was {was}){' [forced]' if forced else ''}"
    raise ValueError(f"{name}@{alias} kept moving while version {version} was compared with its holder "
                     f"({PROMOTE_ATTEMPTS} times): run promote again")


def _alias_holder(client: MlflowClient, name: str, alias: str) -> str | None:
    holder = (client.get_registered_model(name).aliases or {}).get(alias)
    return None if holder is None else str(holder)


def _promote_lock():
    """A lock per registry store: next to a sqlite database, else in the temp folder keyed by the store's URI.

    Its timeout is a ValueError naming the lock file (the OS frees the lock if its holder dies)."""
    uri = mlflow.get_registry_uri()
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///").split("?")[0] + ".promote.lock")
    else:
        key = hashlib.sha256(uri.encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"blipexp-promote-{key}.lock"
    return locks.file_lock(path, timeout=PROMOTE_LOCK_TIMEOUT_S)


def _check_loads(name: str, version: str) -> None:
    """ValueError unless the version loads and captions the example image: a file that merely opens is not enough."""
    uri = f"models:/{name}/{version}"
    fix = "its files are missing or damaged: register a fresh version instead"
    try:
        out = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"image": [example_image_base64()]}),
                                                    params={"max_new_tokens": 4})
    except Exception as exc:  # any failure to download, load or generate means: not promotable
        raise ValueError(f"{uri} does not load ({type(exc).__name__}: {exc}); {fix}") from exc
    captions = list(out["caption"]) if "caption" in getattr(out, "columns", ()) else []
    if len(captions) != 1 or not isinstance(captions[0], str):
        raise ValueError(f"{uri} loads but does not caption the example image (it answered {str(out)[:200]!r}); "
                         f"{fix}")


# --------------------------------------------------------------------------- lookups

def _registered_model(client: MlflowClient, name: str):
    try:
        return client.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models())
        raise ValueError(f"registered model {name!r} not found; known: {', '.join(known) or 'none'}") from None


def versions_of(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of registered model `name`.

    MLflow's filter strings have no escapes (a value is whatever lies between its quotes, a backslash included),
    so the name goes between the quote character it does not hold."""
    quote = '"' if "'" in name else "'"
    if quote in name:
        raise ValueError(f"registered model name {name!r} holds both ' and \": MLflow cannot search for it; "
                         "register under a name without one of them (registered_model in the spec)")
    return list(client.search_model_versions(f"name={quote}{name}{quote}"))


def version_tagged(name: str, tag: str, value: str) -> ModelVersion | None:
    """The version of registered model `name` whose tag `tag` is `value` (e.g. the one a sweep registered), or None,
    also when no model of that name exists yet."""
    return next((v for v in _versions_if_any(name) if v.tags.get(tag) == value), None)


def version_of_run(name: str, run_id: str) -> ModelVersion | None:
    """The version of registered model `name` logged by run `run_id`, or None."""
    return next((v for v in _versions_if_any(name) if v.run_id == run_id), None)


def _versions_if_any(name: str) -> list[ModelVersion]:
    """Every version of registered model `name`; none when no model of that name exists yet."""
    try:
        return versions_of(MlflowClient(), name)
    except MlflowException:
        return []


def tag_version(version: ModelVersion, tags: dict[str, str]) -> None:
    """Set tags on a registered version, in order (a marker tag set last says the others are there)."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(version.name, version.version, key, value)


def _version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    try:
        return client.get_model_version(name, version)
    except MlflowException:
        known = sorted((int(v.version) for v in versions_of(client, name)))
        raise ValueError(f"{name} has no version {version!r}; known versions: "
                         f"{', '.join(map(str, known)) or 'none'}") from None
