"""Resuming an interrupted single run: which run (same spec and data, stopped before it finished, with a whole
epoch checkpoint or a finished training), where it stopped, and what it had already logged.

A single run is tagged with a hash of its spec and data (RESUME_KEY_TAG) and with its host and process id. A run
that a SIGKILL left RUNNING, or that Ctrl-C / SIGTERM ended KILLED, is resumed by the next `run` of the same
spec: the Trainer continues from its last checkpoint (weights, optimizer, scheduler, RNG state) inside the same
MLflow run. A run stopped after its training ended (its best model saved whole and marked: TRAINED) is not
trained again: its saved model is scored, logged and registered. Sweep trials are never resumed (a sweep retries
an interrupted trial's parameters from the start).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .. import tracking
from ..experiment.spec import ExperimentSpec
from ..model import precision
from ..runtime import liveness

RESUME_KEY_TAG = "blipexp.resume_key"
HOST_TAG = "blipexp.host"
PID_TAG = "blipexp.pid"
STARTED_TAG = "blipexp.pid_started"  # the process's start time: a reused pid is another process
INTERRUPTED = ("RUNNING", "KILLED")  # RUNNING: its process was killed (or still trains: see _stopped)
# Fields that change nothing a run trains or logs per epoch: a run differing only in these is the same run.
NOT_TRAINING = frozenset({"registered_model", "n_trials", "prune", "dataloader_workers", "sample_captions",
                          "bootstrap_resamples", "confirm_seeds"})
FULL_CHECKPOINT = ("trainer_state.json", "optimizer.pt", "scheduler.pt")  # trainer_state.json is written last
TRAINED = "trained.json"  # beside a run's model folder once its training has ended and the model is saved whole


@dataclass
class ResumePoint:
    """Where an interrupted run stopped: its last whole checkpoint and what the run had logged by then."""

    run_id: str
    checkpoint: Path | None  # None when its training had ended (`trained`): nothing is trained again
    epoch: int  # epochs done at the checkpoint (all logged ones once trained)
    history: list[dict[str, float]]  # validation metrics of epochs 0..epoch, as CaptionMetricsCallback keeps them
    logged_step: int  # the last optimizer step whose training loss the run holds (it may be past the checkpoint)
    logged_epoch: int  # the last epoch whose validation metrics the run holds
    train_steps: int | None = None  # the optimizer steps of a training that had ended (its model saved: TRAINED)
    results_logged: bool = False  # the saved model's final scores are logged too: registering it was left

    @property
    def trained(self) -> bool:
        return self.train_steps is not None


@dataclass
class Resumable:
    """A single run that can be resumed if interrupted: its key, and where to continue (None: a new run)."""

    key: str
    point: ResumePoint | None = None
    tags: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        me = liveness.this_process()
        self.tags = {RESUME_KEY_TAG: self.key, HOST_TAG: me["host"], PID_TAG: me["pid"], STARTED_TAG: me["started"]}


def resume_key(spec: ExperimentSpec, data_fingerprint: str, precision_used: str) -> str:
    """Equal keys: the same training on the same data (every field but NOT_TRAINING, the data's fingerprint), in the
    same precision (the one used: a run never resumes across a precision=auto that now picks another)."""
    relevant = {k: v for k, v in spec.to_dict().items() if k not in NOT_TRAINING}
    relevant["precision"] = precision_used
    payload = [type(spec).__name__, spec.experiment_name, relevant, data_fingerprint]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan(spec: ExperimentSpec, data_fingerprint: str, home: Path, new: bool, echo: bool = True) -> Resumable:
    """The run to train: the newest interrupted run of this spec and data that has a whole checkpoint, else a new
    one (with `new`, whose interrupted runs' checkpoints are deleted: they would be resumed later otherwise).
    Prints one line when it resumes, and one when an interrupted run of the experiment is left aside."""
    key = resume_key(spec, data_fingerprint, precision.used(spec, home))
    runs = _interrupted_runs(spec)
    mine = [r for r in runs if r.data.tags.get(RESUME_KEY_TAG) == key]
    if new:
        for run in mine:
            _abandon(run, home)
        if mine and echo:
            print(f"--new: interrupted run(s) {', '.join(r.info.run_id for r in mine)} left as they are, their "
                  "checkpoints deleted; starting a new run", flush=True)
        return Resumable(key)
    for run in mine:
        point = _resume_point(run, home)
        if point is not None:
            if echo and point.trained:
                print(f"resuming run {point.run_id} after its training ended: its saved best model is scored, logged "
                      "and registered (--new starts afresh)", flush=True)
            elif echo:
                print(f"resuming run {point.run_id} from epoch {point.epoch} (its last checkpoint; --new starts "
                      "afresh)", flush=True)
            return Resumable(key, point)
    if runs and echo:
        other = runs[0]
        print(f"interrupted run {other.info.run_id} of {spec.experiment_name!r} is not resumed: "
              f"{_why_not(other, spec, data_fingerprint, key, home)}; starting a new run", flush=True)
    return Resumable(key)


def _interrupted_runs(spec: ExperimentSpec) -> list:
    """Interrupted single runs of this experiment, newest first, whose process is gone."""
    runs = tracking.experiment_runs(spec.experiment_name, "attributes.status != 'FINISHED'",
                                    order_by=["attributes.start_time DESC"])
    return [r for r in runs if RESUME_KEY_TAG in r.data.tags and r.info.status in INTERRUPTED and _stopped(r)]


def _stopped(run) -> bool:
    """Whether the run's process has ended: KILLED, or RUNNING with its process gone from this machine. A RUNNING
    run of another machine may still be training there: left alone."""
    if run.info.status != "RUNNING":
        return True
    tags = run.data.tags
    recorded = {"host": tags.get(HOST_TAG), "pid": tags.get(PID_TAG), "started": tags.get(STARTED_TAG)}
    if not liveness.on_this_host(recorded):
        return False
    return not liveness.alive(recorded)


def _resume_point(run, home: Path) -> ResumePoint | None:
    folder = home / "checkpoints" / run.info.run_id
    train_steps = _trained_steps(folder)
    checkpoint = last_checkpoint(folder) if train_steps is None else None
    if train_steps is None and checkpoint is None:
        return None
    logged = _logged_history(run)
    epoch = (round(json.loads((checkpoint / "trainer_state.json").read_text())["epoch"]) if checkpoint
             else max(logged, default=0))
    history = [{"epoch": e, **values} for e, values in sorted(logged.items()) if e <= epoch]
    steps = [m.step for m in tracking.Run(run.info.run_id).metric_history("train_loss")]
    return ResumePoint(run.info.run_id, checkpoint, epoch, history, logged_step=max(steps, default=-1),
                       logged_epoch=max(logged, default=-1), train_steps=train_steps,
                       results_logged="objective" in run.data.metrics)  # the last of the final results logged


def mark_trained(folder: Path, train_steps: int) -> None:
    """The training in `folder` (checkpoints/<run id>) has ended and its best model is saved whole in model/: a run
    stopped from here on is resumed from that model, its epoch checkpoints no longer needed."""
    (folder / TRAINED).write_text(json.dumps({"train_steps": train_steps}))


def _trained_steps(folder: Path) -> int | None:
    """The optimizer steps of a training that has ended (mark_trained), or None: still training."""
    try:
        return int(json.loads((folder / TRAINED).read_text())["train_steps"])
    except (OSError, ValueError, KeyError):  # none, or cut by a kill: its epoch checkpoints are still there
        return None


def last_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint-N folder written whole with the optimizer's state (a kill may have cut the newest
    one short: its trainer_state.json, written last, is then missing or cut)."""
    by_step = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.rpartition("-")[2]), reverse=True)
    for checkpoint in by_step:
        if all((checkpoint / name).is_file() for name in FULL_CHECKPOINT):
            try:
                json.loads((checkpoint / "trainer_state.json").read_text())
            except ValueError:
                continue
            return checkpoint
    return None


def _logged_history(run) -> dict[int, dict[str, float]]:
    """The run's validation metrics by epoch (the `val_*` points CaptionMetricsCallback wrote, step = epoch)."""
    record, by_epoch = tracking.Run(run.info.run_id), {}
    for key in run.data.metrics:
        if key.startswith("val_"):
            for point in record.metric_history(key):
                by_epoch.setdefault(point.step, {})[key[len("val_"):]] = point.value
    return by_epoch


def _why_not(run, spec: ExperimentSpec, data_fingerprint: str, key: str, home: Path) -> str:
    if run.data.tags.get(RESUME_KEY_TAG) == key:
        return "it has no whole epoch checkpoint"
    if run.data.tags.get("data_fingerprint") != data_fingerprint:
        return "its data differ"
    params = run.data.params
    differ = [k for k, v in spec.to_dict().items() if k not in NOT_TRAINING and k in params
              and params[k] != (v if isinstance(v, str) else json.dumps(v))]  # as tracking logs params
    return f"its spec differs in {', '.join(differ)}" if differ else "its spec differs"


def _abandon(run, home: Path) -> None:
    shutil.rmtree(home / "checkpoints" / run.info.run_id, ignore_errors=True)
    if run.info.status == "RUNNING":
        tracking.Run(run.info.run_id).end("KILLED")
