"""Recovery from dead workers: orphaned and stale trials, heartbeats, retrying their params, and repairing MLflow
runs that disagree with their trial.

- a trial whose process on this machine was killed (host, pid and start time: liveness.py) is marked FAIL by the next process to start,
  its MLflow run ended KILLED and its checkpoints deleted (never reused), and its params retried.
- dead workers on other machines: each running trial in a database study records a heartbeat; a trial silent
  for longer than the grace period, GRACE_HEARTBEATS x the heartbeat interval (3 x 30 s = 90 s by default,
  $BLIPEXP_HEARTBEAT_SECONDS), is failed by the next worker that looks (its worker was killed, or its machine
  died), and its params retried. Host + pid (fail_orphaned_trials) only sees workers on its own machine.
- a live worker whose heartbeats were late for longer than the grace period (e.g. the database was unreachable)
  finds its trial failed behind its back: its heartbeat thread notices at the next beat, and the trial stops at
  its next epoch end (TrialLost), its run KILLED, its model dropped; the worker goes on with the next trial.
"""
from __future__ import annotations

import shutil
import socket
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .. import tracking
from ..runtime import liveness
from .study import FINAL_STATES, heartbeat_interval, rdb, storage_of, trial_id

STALE_REASON = "its worker stopped (no heartbeat)"
LOST_REASON = "failed by another worker: its heartbeats came later than the grace period (database unreachable?)"


def fail_orphaned_trials(study: optuna.Study) -> int:
    """RUNNING trials whose process on this machine is gone: mark FAIL, retry their params. Call under the study lock.

    A RUNNING trial without host and pid lost its process between `ask` and recording them (both happen
    under the lock, so no live worker is in that window)."""
    host, failed = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if "host" in attrs and (attrs["host"] != host or liveness.alive(attrs)):
            continue
        storage_of(study).set_trial_user_attr(trial_id(study, trial.number), "fail_reason",
                                              "its process stopped (killed)")
        study.tell(trial.number, state=TrialState.FAIL)
        retry(study, trial.params or trial.system_attrs.get("fixed_params", {}))
        failed += 1
    return failed


def retry(study: optuna.Study, params: dict) -> None:
    """Queue `params` for the next trial, once. (`enqueue_trial(skip_if_exists=True)` would skip it: the failed
    trial itself has these params.) Call under the study lock."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if params and not any(t.system_attrs.get("fixed_params") == params for t in waiting):
        study.enqueue_trial(params)


def reconcile_runs(study: optuna.Study, home: Path) -> int:
    """Make each finished trial's MLflow run agree with it: runs a killed process left RUNNING end KILLED (their
    unfinished checkpoints deleted), or FINISHED for a finished trial whose run was re-opened by a registration
    that was killed or interrupted. Also covers a run stopped before it was recorded on its trial. Call under
    the study lock; returns how many runs it changed."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    runs, changed = tracking.find_runs(f"tags.optuna_study = '{study.study_name}'"), 0
    for run in runs:
        trial = by_number.get(int(run.data.tags.get("optuna_trial", -1)))  # -1: the sweep run itself
        if trial is None or trial.state == TrialState.RUNNING:
            continue  # a live worker's trial (orphans were failed before this is called)
        run_id, status, record = run.info.run_id, run.info.status, tracking.Run(run.info.run_id)
        finished = trial.state in FINAL_STATES and trial.user_attrs.get("mlflow_run_id") == run_id
        if finished and status != "FINISHED":
            record.tags({"trial_state": trial.state.name})
            record.end("FINISHED")
        elif not finished and status == "RUNNING":
            shutil.rmtree(home / "checkpoints" / run_id, ignore_errors=True)
            record.tags({"fail_reason": fail_reason(trial), "trial_state": "FAIL"})
            record.end("KILLED")
        else:
            continue
        changed += 1
    return changed


def fail_reason(trial: optuna.trial.FrozenTrial) -> str:
    """Why the trial's process stopped; a FAIL trial without a reason was failed by Optuna for a stale heartbeat."""
    if "fail_reason" in trial.user_attrs:
        return trial.user_attrs["fail_reason"]
    return STALE_REASON if trial.state == TrialState.FAIL else "its process stopped (killed)"


# --- heartbeats: a running trial says it is alive; a silent one is failed by whoever looks next


class TrialLost(Exception):
    """Another worker failed this running trial (its heartbeats came too late): stop it and keep nothing."""


class Pulse:
    """What the heartbeat thread learned about its trial: `check()` (at each safe point of training) raises
    TrialLost once the trial is no longer RUNNING in the storage."""

    def __init__(self) -> None:
        self.lost = threading.Event()

    def check(self) -> None:
        if self.lost.is_set():
            raise TrialLost(LOST_REASON)


def ask(study: optuna.Study) -> optuna.Trial:
    """study.ask(), with the trial's first heartbeat recorded at once (call under the study lock): a worker
    killed before its heartbeat thread starts still leaves a trial that goes stale."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        trial = study.ask()  # ask/tell drives our heartbeats (heartbeat()), not Study.optimize
    if heartbeat_interval(study):
        rdb(study).record_heartbeat(trial_id(study, trial.number))
    return trial


def is_running(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether the trial is still RUNNING in the storage (no other worker failed it)."""
    return storage_of(study).get_trial(trial_id(study, trial.number)).state == TrialState.RUNNING


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[Pulse]:
    """Record the trial's heartbeat every interval while the body runs (a daemon thread); the Pulse yielded
    says when another worker failed the trial meanwhile (see the module docstring)."""
    pulse, interval = Pulse(), heartbeat_interval(study)
    if not interval:
        yield pulse
        return
    storage, stop, trial_key = rdb(study), threading.Event(), trial_id(study, trial.number)

    def beat() -> None:
        while not stop.wait(interval):
            try:
                if storage.get_trial(trial_key).state != TrialState.RUNNING:
                    pulse.lost.set()  # failed behind our back (or just told by us: then nobody checks)
                    return
                storage.record_heartbeat(trial_key)
            except Exception as exc:  # a database hiccup: keep training, try again next interval
                warnings.warn(f"heartbeat of trial {trial.number} not recorded: {exc}", stacklevel=1)

    thread = threading.Thread(target=beat, name=f"heartbeat-trial-{trial.number}", daemon=True)
    thread.start()
    try:
        yield pulse
    finally:
        stop.set()
        thread.join()


def fail_stale_trials(study: optuna.Study) -> int:
    """Fail the running trials whose heartbeat stopped (Optuna's fail_stale_trials) and retry their params;
    returns how many. Call under the study lock. Optuna fails them before a reason could be recorded on them:
    a FAIL trial without a fail_reason is one of these (reconcile_runs tags its run with STALE_REASON)."""
    if not heartbeat_interval(study):
        return 0
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # stable since 2.9
        optuna.storages.fail_stale_trials(study)
    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
             if t.number in running and "fail_reason" not in t.user_attrs]  # our own failures always say why
    for trial in stale:
        retry(study, trial.params or trial.system_attrs.get("fixed_params", {}))
    return len(stale)
