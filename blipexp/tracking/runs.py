"""Writing runs: the one place blipexp writes to (and reads back from) MLflow runs. A run is started from a spec
(its params and spec.json), written through `Run` (each write timed in WRITES), and ended with its status."""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import mlflow
from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelInput, Metric, Param, RunTag

from ..experiment.spec import ExperimentSpec
from ..runtime import distributed, environment


def run_tags(spec: ExperimentSpec, data_fingerprint: str) -> dict[str, str]:
    return {
        "blipexp.experiment": spec.name or type(spec).__name__,
        "profile": spec.profile,
        "git_commit": environment.git_commit(),
        "data_fingerprint": data_fingerprint,
        "mlflow.note.content": spec.hypothesis,  # shown as the run's description in the UI
    }


@contextmanager
def start_run(spec: ExperimentSpec, *, run_name: str, tags: dict[str, str], nested: bool = False,
              resume_run_id: str | None = None) -> Iterator[Run]:
    """A new active run holding the resolved spec as params and as spec.json; ends FAILED if the body raises, KILLED
    if it is interrupted (Ctrl-C, or SIGTERM: the cli raises a KeyboardInterrupt for both). The interrupt goes on
    up carrying `killed_run_id`, so the command can name the run.

    Under `accelerate launch` only the main process creates the run; the other ranks get the same run id (they
    write nothing to it, but name their checkpoint folder after it).

    `resume_run_id`: continue that (interrupted) run instead, RUNNING again; its spec is logged already, the
    tags are updated."""
    if not distributed.is_main_process():
        yield Run(distributed.from_main(None))
        return
    # system metrics (system/cpu_utilization_percentage, memory, GPU where present) sampled by MLflow's own thread
    resuming = {"run_id": resume_run_id} if resume_run_id else {"run_name": run_name, "tags": tags}
    with mlflow.start_run(nested=nested, log_system_metrics=spec.system_metrics, **resuming) as active:
        run = Run(active.info.run_id)
        try:
            distributed.from_main(run.id)
            resolved = spec.to_dict()
            if resume_run_id:
                run.tags(tags)  # e.g. the process id that now trains it
            else:
                run.params(spec.params())  # a `trainer` entry as its own param, e.g. trainer.label_smoothing_factor
                run.dict({"experiment": spec.name, "class": type(spec).__name__, "spec": resolved}, "spec.json")
            yield run
        except KeyboardInterrupt as exc:
            mlflow.end_run("KILLED")  # stopped, not broken; mlflow's own exit would mark it FAILED
            exc.killed_run_id = run.id
            raise


def _param(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class WriteStats:
    """Time spent writing to the tracking store, summed over this process (the benchmark reads it)."""

    seconds: float = 0.0
    calls: int = 0
    by_kind: dict[str, float] = field(default_factory=dict)  # seconds per Run method: where the time goes


WRITES = WriteStats()
# how often what is logged as training goes (loss points, sample captions) is written, at most: a store write costs
# 5-20 ms and a tiny epoch 0.4 s; an epoch that takes longer is still written as it ends
WRITE_EVERY_SECONDS = 30.0


@contextmanager
def _timed(kind: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        spent = time.perf_counter() - started
        WRITES.seconds += spent
        WRITES.calls += 1
        WRITES.by_kind[kind] = WRITES.by_kind.get(kind, 0.0) + spent


@contextmanager
def no_artifact_progress_bar() -> Iterator[None]:
    """Appending rows to a table downloads the table first, and logging a model with an input example loads it
    back: MLflow draws a "Downloading artifacts" bar for each, console noise for local files. Off around such
    calls only (MLflow reads the variable at each download)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


class Run:
    """One MLflow run as blipexp writes it: params, metrics (with a step), tags, tables, figures and dicts, then an
    end status. Addressed by id, so it works on the active run and on any other (a sweep ends its trials' runs
    from outside them). Values are written in batches: a store write costs about 10 ms."""

    def __init__(self, run_id: str):
        self.id = run_id

    @classmethod
    def active(cls) -> "Run | None":
        run = mlflow.active_run()
        return cls(run.info.run_id) if run else None

    def params(self, values: dict[str, Any]) -> None:
        with _timed("params"):
            mlflow.MlflowClient().log_batch(self.id, params=[Param(k, _param(v)) for k, v in values.items()])

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        self.metric_points([(k, v, step or 0) for k, v in values.items()])

    def metric_points(self, points: list[tuple[str, float, int]]) -> None:
        """Several (key, value, step) points, e.g. a training-loss curve, in one write."""
        if not points:
            return
        now = int(time.time() * 1000)
        with _timed("metrics"):
            mlflow.MlflowClient().log_batch(self.id, metrics=[Metric(k, float(v), now, s) for k, v, s in points])

    def tags(self, values: dict[str, Any]) -> None:
        with _timed("tags"):
            mlflow.MlflowClient().log_batch(self.id, tags=[RunTag(k, str(v)) for k, v in values.items()])

    def table(self, data: dict[str, list], artifact_file: str) -> None:
        """Rows appended to the run's table `artifact_file` (created by the first call).

        A column of PIL images is stored as image files, two per cell (PNG and WebP) at every call; the cells that
        call wrote (`table_cells`) can be passed again instead, to show the same images without storing them again."""
        with _timed("table"), no_artifact_progress_bar():
            mlflow.MlflowClient().log_table(self.id, data=data, artifact_file=artifact_file)

    def table_cells(self, artifact_file: str, column: str) -> list:
        """The stored cells of one column of a table, in row order (an image cell names its stored files)."""
        return self.table_columns(artifact_file)[column]

    def table_columns(self, artifact_file: str) -> dict[str, list]:
        """A table the run holds, as its columns of cells in row order."""
        with _timed("table"), no_artifact_progress_bar():
            table = mlflow.artifacts.load_dict(f"runs:/{self.id}/{artifact_file}")
        return {name: [row[i] for row in table["data"]] for i, name in enumerate(table["columns"])}

    def logged_dict(self, artifact_file: str) -> dict | None:
        """A JSON artifact of the run, or None when it has none of that name (e.g. a run older than the artifact)."""
        try:
            with no_artifact_progress_bar():
                return mlflow.artifacts.load_dict(f"runs:/{self.id}/{artifact_file}")
        except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact: there is none to read
            return None

    def figure(self, figure, artifact_file: str) -> None:
        with _timed("figure"):
            mlflow.MlflowClient().log_figure(self.id, figure, artifact_file)

    def dataset(self, name: str, digest: str, source_type: str, source: dict, profile: dict, context: str) -> None:
        """A dataset entity among the run's inputs (the UI's "Datasets used"): where the data came from
        (`source`, JSON), its fingerprint (`digest`) and a summary (`profile`, JSON), used as `context`
        (e.g. "train")."""
        entity = Dataset(name=name, digest=digest, source_type=source_type, source=json.dumps(source),
                         profile=json.dumps(profile))
        with _timed("dataset"):
            mlflow.MlflowClient().log_inputs(self.id, datasets=[
                DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])])

    def link_model(self, model_id: str) -> None:
        """Record a logged model (MLflow 3) as an input of this run, e.g. the model an evaluation run scored: the
        model's page then lists the run."""
        with _timed("dataset"):
            mlflow.MlflowClient().log_inputs(self.id, models=[LoggedModelInput(model_id)])

    def dict(self, value: dict, artifact_file: str) -> None:
        with _timed("dict"):
            mlflow.MlflowClient().log_dict(self.id, value, artifact_file)

    def text(self, text: str, artifact_file: str) -> None:
        with _timed("text"):
            mlflow.MlflowClient().log_text(self.id, text, artifact_file)

    def end(self, status: str) -> None:
        """FINISHED, FAILED or KILLED."""
        with _timed("end"):
            mlflow.MlflowClient().set_terminated(self.id, status)

    def read(self):
        """What the store holds for this run (`.data.metrics`, `.data.params`, `.data.tags`, `.info.status`)."""
        return mlflow.get_run(self.id)

    def metric_history(self, key: str) -> list[Metric]:
        """Every point logged for metric `key` (`.step`, `.value`)."""
        return mlflow.MlflowClient().get_metric_history(self.id, key)


def experiment_runs(experiment_name: str, filter_string: str = "", order_by: list[str] | None = None) -> list:
    """Runs of one experiment matching an MLflow filter (none when the experiment does not exist yet)."""
    experiment = mlflow.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    return mlflow.search_runs(experiment_ids=[experiment.experiment_id], output_format="list",
                              filter_string=filter_string, order_by=order_by)


def find_runs(filter_string: str) -> list:
    """Runs of every experiment matching an MLflow filter, e.g. "tags.optuna_study = 'x'"."""
    return mlflow.search_runs(search_all_experiments=True, output_format="list", filter_string=filter_string)


@contextmanager
def reopen(run_id: str, nested: bool = False) -> Iterator[Run]:
    """Make an existing run the active one for the body (MLflow's fluent calls and autologging then go to it)."""
    with mlflow.start_run(run_id=run_id, nested=nested):
        yield Run(run_id)


@contextmanager
def new_run(run_name: str, tags: dict[str, str], nested: bool = False) -> Iterator[Run]:
    """A new active run for the body; it ends FAILED if the body raises, FINISHED otherwise."""
    with mlflow.start_run(run_name=run_name, tags=tags, nested=nested) as run:
        yield Run(run.info.run_id)


def end_active(status: str) -> None:
    """End the active run with `status` now (e.g. KILLED on an interrupt: leaving its `with` would mark it FAILED)."""
    with _timed("end"):
        mlflow.end_run(status)
