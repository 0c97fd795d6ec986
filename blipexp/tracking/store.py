"""Where runs are stored and how to browse them: the store lives in the blipexp home folder (default ./mlruns).

MLflow 3 refuses the old file store, so runs and the registry go to `sqlite:///<home>/mlflow.db` (or to
$MLFLOW_TRACKING_URI when set: see tracking_uri) and artifacts to `<home>/artifacts/`, which each experiment is
created with (otherwise MLflow would put them in ./mlartifacts of whatever directory the process started in).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import mlflow

from ..runtime import secrecy

DEFAULT_HOME = "mlruns"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
REGISTRY_URI_ENV = "MLFLOW_REGISTRY_URI"
# MLflow's UI opens an experiment in the view its kind names: without this tag MLflow 3 guesses, and shows a
# training project its GenAI view (traces, judges, prompts) instead of runs, charts and models.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"

# The system-metrics monitor says "Started/Stopping monitoring system metrics" (INFO) at every run's start and
# end: noise in a sweep's console. Its warnings (a failed sample) still show.
logging.getLogger("mlflow.system_metrics.system_metrics_monitor").setLevel(logging.WARNING)
# A new store's first use says "Creating initial MLflow database tables..." and "Updating database tables" (INFO),
# and its schema migration alembic's INFO lines: noise on a first run's console. Their warnings and errors still show.
for _setup_logger in ("mlflow.store.db.utils", "alembic"):
    logging.getLogger(_setup_logger).setLevel(logging.WARNING)
# Logging a model says "Validating input example against model signature" (INFO) each time: noise as well.
logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """The folder holding all run state: explicit argument, else $BLIPEXP_HOME, else ./mlruns."""
    return Path(home or os.environ.get("BLIPEXP_HOME") or DEFAULT_HOME).expanduser().resolve()


def tracking_uri(home: Path, uri: str | None = None) -> str:
    """Where runs and the registry go: `uri` if given, else $MLFLOW_TRACKING_URI, else sqlite in home.

    The one place the tracking URI is resolved: a command-line flag passes `uri`.
    """
    return uri or os.environ.get(TRACKING_URI_ENV) or f"sqlite:///{home / 'mlflow.db'}"


def current_uri() -> str:
    """The tracking (and registry) URI MLflow is pointed at now."""
    return mlflow.get_tracking_uri()


def configure(home: Path, uri: str | None = None) -> str:
    """Point MLflow (tracking and registry) at the resolved URI; fail clearly if home or the store is unusable.

    Both are checked here, before any data is made or any training starts.
    """
    _check_writable(home)
    uri_given = bool(uri)
    uri = tracking_uri(home, uri)
    _check_store(uri, _fix(explicit=uri_given))  # before MLflow's globals change: a failure leaves them as they were
    exported = {name: os.environ.get(name) for name in (TRACKING_URI_ENV, REGISTRY_URI_ENV)}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # MLflow also exports both URIs to os.environ; put it back, or a child `blipexp --home OTHER` started by this
    # process would take this process's store for the user's $MLFLOW_TRACKING_URI.
    for name, value in exported.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return uri


def _check_writable(home: Path) -> None:
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"run-state folder {home} is not writable ({exc.strerror}): "
                         "pass --home DIR or set BLIPEXP_HOME to a writable folder") from exc


def _fix(explicit: bool) -> str:
    """What to change, by where the URI came from (tracking_uri's order)."""
    if explicit:
        return "check the tracking URI you passed"
    if os.environ.get(TRACKING_URI_ENV):
        return f"fix or unset ${TRACKING_URI_ENV}"
    return "pass --home DIR or set BLIPEXP_HOME to a writable folder"


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _check_store(uri: str, fix: str) -> None:
    """ValueError naming the URI and the fix when the tracking store cannot be opened."""
    if is_server(uri):
        # a quick probe (MLflow's own client retries a dead server for minutes): reachable, trusted, logged in
        from . import access

        access.check_server(uri, fix)
        warning = access.warn_if_clear_text(uri)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        return
    try:
        # opens (and, for sqlite, creates) the store
        mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # any failure to open the store: name it before training, not after
        raise ValueError(f"MLflow tracking store {secrecy.masked(uri)} cannot be opened ({type(exc).__name__}: "
                         f"{secrecy.scrubbed(str(exc), uri)}); {fix}") from exc


def use_experiment(name: str, home: Path) -> str:
    """Select the MLflow experiment `name`, creating it with its artifacts under home/artifacts."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        # a tracking server keeps artifacts itself (--serve-artifacts): a folder here would be this machine's only
        artifacts = None if is_server(mlflow.get_tracking_uri()) else (home / "artifacts").as_uri()
        try:  # the kind tag is created with the experiment: parallel workers then have no tag write to race on
            experiment_id = mlflow.create_experiment(name, artifact_location=artifacts,
                                                     tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
        except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel worker
            experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        experiment_id = experiment.experiment_id
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # made before blipexp tagged; a kind chosen in the UI stays
            _tag_kind(experiment_id)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def _tag_kind(experiment_id: str) -> None:
    try:
        mlflow.MlflowClient().set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    except mlflow.exceptions.MlflowException:  # a parallel worker's identical insert won (a database's unique key)
        if EXPERIMENT_KIND_TAG not in mlflow.get_experiment(experiment_id).tags:
            raise


UI_PORT = 5000  # `blipexp ui` and `mlflow ui` serve here unless told otherwise
# MLflow 3.17's UI opens in its GenAI workspace unless the browser chose "Model training" once (kept in its local
# storage) or the link asks for it: this query parameter, read from the URL on every page
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def ui_link(base: str, experiment_id: str | None = None) -> str:
    """A UI link that opens in the model-training view: an experiment's runs, or the experiment list."""
    page = f"experiments/{experiment_id}/runs" if experiment_id else "experiments"
    return f"{base.rstrip('/')}/#/{page}?{MODEL_TRAINING_VIEW}"


def ui_command(home: Path, experiment_name: str | None = None) -> str:
    """How to browse the runs: the command that serves the UI (a local store), then the page to open."""
    found = mlflow.get_experiment_by_name(experiment_name) if experiment_name else None
    experiment_id = found.experiment_id if found else None
    uri = mlflow.get_tracking_uri()
    if is_server(uri):
        return ui_link(secrecy.masked(uri), experiment_id) + "   (the tracking server serves the UI)"
    return (f"python -m blipexp ui --home {home}   (or: mlflow ui --backend-store-uri {tracking_uri(home)})\n"
            f"  then open   {ui_link(f'http://127.0.0.1:{UI_PORT}', experiment_id)}")
