"""The trial loop: one nested MLflow run per trial under one parent run per sweep, a median pruner fed each
epoch's objective (pruner.py), and resume by re-running the same command.

Faults: several processes may run the same sweep at once (study.py: the lock around every decision that must be
taken once: creating the sweep run, starting a trial while the total is not reached, keeping the best model,
registering). Trials of dead workers are failed and retried by recovery.py. A NaN or inf objective fails the
trial with the reason on the trial and its run.
"""
from __future__ import annotations

import gc
import json
import math
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .. import tracking
from ..data import CaptionData
from ..experiment.spec import ExperimentSpec
from ..model import precision
from ..runtime import interrupts, liveness
from ..training.train import TrialResult, train_trial, untrained_key
from . import recovery
from .report import log_parent_summary, trial_ended, trial_started
from .study import best_trial, counted, open_study, sampler, study_lock, suggest

POLL_SECONDS = 2.0  # how often a worker with nothing left to start looks at the others' trials


@dataclass
class SweepResult:
    study: optuna.Study
    parent_run_id: str
    best_trial: optuna.trial.FrozenTrial | None
    best_model_dir: Path | None


class _TrialStopped(Exception):
    """The trial's objective is unusable (NaN, inf): the trial fails with this reason."""


def run_sweep(spec: ExperimentSpec, data: CaptionData, home: Path, *, new: bool = False, echo: bool = True,
              storage: optuna.storages.BaseStorage | None = None) -> SweepResult:
    """Run trials until the study holds spec.n_trials finished (COMPLETE or PRUNED) ones, with any number of
    workers running the same command (on this machine, or on several with a database `storage`); then wait for
    the others' trials to finish."""
    study = open_study(spec, home, new=new, storage=storage)
    with study_lock(study, home):
        retried = recovery.fail_orphaned_trials(study)
        recovery.reconcile_runs(study, home)
        parent_id = _parent_run(study, spec)
    if echo and retried:
        print(f"resume: {retried} trial(s) left running by a stopped process marked failed; their parameters are retried")
    with tracking.reopen(parent_id) as parent:
        try:
            with long_lived_objects_frozen():
                _run_trials(study, spec, data, home, echo)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (cli): the sweep run ends KILLED, not FAILED
            tracking.end_active("KILLED")
            raise
        with study_lock(study, home):
            best = best_trial(study)
            log_parent_summary(parent, study, best)
    return SweepResult(study, parent_id, best, Path(best.user_attrs["model_dir"]) if best else None)


@contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Every Trainer.train() starts with a full gc.collect() (accelerate's free_memory). With MLflow, transformers
    and the data loaded, the heap holds about 700,000 long-lived objects, and that scan took 0.44 s per trial, a
    sixth of a 4-epoch cached trial (BENCHMARKS.md). Frozen, a collection scans only what came after."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _run_trials(study: optuna.Study, spec: ExperimentSpec, data: CaptionData, home: Path, echo: bool) -> None:
    """Start a trial only while finished plus running trials are short of the total (checked under the lock,
    so parallel workers never overshoot). A failed trial is replaced, up to as many failures as trials were
    left at the start: beyond that something is wrong with every trial, and the sweep stops."""
    done = counted(study)
    failures_left = max(1, spec.n_trials - done)
    if echo:
        print(f"study {study.study_name}: {done} of {spec.n_trials} trials done, "
              f"{max(0, spec.n_trials - done)} to run", flush=True)
    waiting_said = False
    while True:
        interrupts.check()  # between trials: a safe point to stop at
        with study_lock(study, home):
            if recovery.fail_orphaned_trials(study) + recovery.fail_stale_trials(study):  # a worker died: end its run now
                recovery.reconcile_runs(study, home)
            running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            trial = None
            if counted(study) + running < spec.n_trials and failures_left > 0:
                study.sampler = sampler(spec, len(study.trials))
                trial = recovery.ask(study)
                for key, value in liveness.this_process().items():  # host, pid, start time: who runs it
                    trial.set_user_attr(key, value)
        if trial is not None:
            with recovery.heartbeat(study, trial) as pulse:  # silence marks the trial dead to other machines' workers
                # A lost trial counts as a failure too: a worker whose every trial is lost stops.
                failures_left -= _run_trial(study, trial, spec, data, home, echo, pulse) == TrialState.FAIL
            if echo:
                print(trial_ended(study, spec, trial.number), flush=True)
            continue
        if not running:
            return
        if echo and not waiting_said:
            print(f"waiting for {running} trial(s) running in other worker(s) to finish", flush=True)
            waiting_said = True
        time.sleep(POLL_SECONDS)


def _parent_run(study: optuna.Study, spec: ExperimentSpec) -> str:
    """The sweep's MLflow run: created once per study (under the study lock), reopened on resume."""
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id:
        return run_id
    with tracking.new_run(f"sweep-{study.study_name}", tags={
        "blipexp.role": "sweep", "optuna_study": study.study_name, "profile": spec.profile,
        "mlflow.note.content": spec.hypothesis,
    }) as run:
        run.params({
            "study_name": study.study_name,
            "search_space": json.dumps({k: repr(v) for k, v in spec.search_space().items()}),
            "sampler": type(study.sampler).__name__ + f"(seed={spec.seed} + trial position)",
            "pruner": type(study.pruner).__name__,
            "n_trials": spec.n_trials,
            "objective": f"{spec.direction} val {spec.objective_metric}",
        })
        run.dict(spec.to_dict(), "spec.json")
    study.set_user_attr("mlflow_parent_run_id", run.id)
    return run.id


@dataclass
class _TrialRun:
    """One trial as it runs: its Optuna trial, the MLflow run it logs to (known from its first evaluation on),
    and the epoch-0 scores it may reuse."""

    study: optuna.Study
    trial: optuna.Trial
    spec: ExperimentSpec  # with the trial's suggested params once choose_params() ran
    home: Path
    pulse: recovery.Pulse
    started: float = field(default_factory=time.perf_counter)
    untrained_attr: str = ""  # the study attribute holding the initial model's scores (epoch 0), shared by trials
    untrained: dict[str, float] | None = None  # those scores, when an earlier trial logged them
    run_id: str | None = None

    def choose_params(self, data: CaptionData, echo: bool) -> None:
        """The trial's params suggested and announced, and the epoch-0 scores of its initial model if known."""
        params = {key: suggest(self.trial, key, dim) for key, dim in self.spec.search_space().items()}
        if echo:
            print(trial_started(self.study, self.spec, self.trial.number, params), flush=True)
        self.spec = self.spec.replace(**params)
        key = untrained_key(self.spec, data.fingerprint, precision.used(self.spec, self.home))
        self.untrained_attr = f"untrained:{key}"
        self.untrained = self.study.user_attrs.get(self.untrained_attr)

    def report(self, epoch: int, metrics: dict[str, float]) -> None:
        """After each evaluation: record the run, share epoch 0's scores, feed the pruner."""
        self.pulse.check()  # an epoch's end is a safe point to stop a trial another worker failed
        if self.run_id is None:
            self.run_id = tracking.Run.active().id
            self.trial.set_user_attr("mlflow_run_id", self.run_id)
        if epoch == 0:
            if self.untrained is None:  # the first trial with this initial model: later ones reuse its scores
                self.study.set_user_attr(self.untrained_attr, metrics)
            return
        self.trial.report(metrics[self.spec.objective_metric], epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    def tag_fail_reason(self, reason: str) -> None:
        if self.run_id is None:  # stopped before its first evaluation recorded the run: find it by its tags
            found = tracking.find_runs(f"tags.optuna_study = '{self.study.study_name}' and "
                                       f"tags.optuna_trial = '{self.trial.number}'")
            self.run_id = found[0].info.run_id if found else None
        if self.run_id is not None:
            tracking.Run(self.run_id).tags({"fail_reason": reason[:5000]})

    def end_run(self, state: str, status: str) -> None:
        """End the trial's MLflow run as the trial ended (tag trial_state); an unfinished one's checkpoints go."""
        if self.run_id is None:
            return  # no run was started
        if state != "COMPLETE":  # an unfinished trial's checkpoints are never used
            shutil.rmtree(self.home / "checkpoints" / self.run_id, ignore_errors=True)
        record = tracking.Run(self.run_id)
        record.tags({"trial_state": state})
        record.metrics({"trial_seconds": time.perf_counter() - self.started})
        record.end(status)


def _run_trial(study: optuna.Study, trial: optuna.Trial, spec: ExperimentSpec, data: CaptionData, home: Path,
               echo: bool, pulse: recovery.Pulse) -> TrialState:
    """Train one trial and tell the study how it ended; the MLflow run ends with the same state.

    Ctrl-C / SIGTERM: the trial is told FAIL (its params are retried on resume), its run ends KILLED, and
    the interrupt goes on up. Failed by another worker meanwhile (`pulse`): see _lost."""
    current = _TrialRun(study, trial, spec, home, pulse)
    try:
        current.choose_params(data, echo)
        result = train_trial(current.spec, data, home, run_name=f"trial-{trial.number}", listeners=[current.report],
                             extra_tags={"optuna_study": study.study_name, "optuna_trial": str(trial.number)},
                             nested=True, echo=echo, untrained=current.untrained)
        if not math.isfinite(result.objective):
            raise _TrialStopped(f"objective {spec.objective_metric} is {result.objective}")
    except optuna.TrialPruned:
        return _pruned(current, echo)
    except (recovery.TrialLost, optuna.exceptions.UpdateFinishedTrialError):  # failed before the pulse noticed
        return _lost(current, echo)
    except (Exception, KeyboardInterrupt) as exc:
        return _failed(current, exc, echo)
    return _complete(current, result, echo)


def _complete(current: _TrialRun, result: TrialResult, echo: bool) -> TrialState:
    with study_lock(current.study, current.home):  # one worker at a time decides which model folder to keep
        if not recovery.is_running(current.study, current.trial):  # failed by another worker in its last epoch
            return _lost(current, echo)
        current.trial.set_user_attr("model_dir", str(result.model_dir))
        current.trial.set_user_attr("seconds", time.perf_counter() - current.started)
        current.end_run("COMPLETE", "FINISHED")
        current.study.tell(current.trial, result.objective)
        _keep_only_best_model(current.study)
    return TrialState.COMPLETE


def _pruned(current: _TrialRun, echo: bool) -> TrialState:
    with study_lock(current.study, current.home):  # stale trials are failed under this lock: no one fails it meanwhile
        if not recovery.is_running(current.study, current.trial):
            return _lost(current, echo)
        current.end_run("PRUNED", "FINISHED")
        current.study.tell(current.trial, state=TrialState.PRUNED)
    return TrialState.PRUNED


def _lost(current: _TrialRun, echo: bool) -> TrialState:
    """Another worker failed this trial behind its back (its heartbeats came later than the grace period) and
    queued its params again: end its run KILLED and delete its checkpoints and model (never registered); the
    trial is already FAIL, so the study is not told."""
    with interrupts.held():
        current.tag_fail_reason(recovery.LOST_REASON)
        current.end_run("FAIL", "KILLED")
    if echo:
        print(f"trial {current.trial.number} stopped: {recovery.LOST_REASON}", flush=True)
    return TrialState.FAIL


def _failed(current: _TrialRun, exc: BaseException, echo: bool) -> TrialState:
    """The trial raised: FAIL with the reason on the trial and its run. An interrupt (Ctrl-C, SIGTERM) ends the run
    KILLED, queues the same params again (not the trial's fault) and goes on up."""
    interrupted = isinstance(exc, KeyboardInterrupt)
    reason = f"interrupted ({exc or 'SIGINT'})" if interrupted else f"{type(exc).__name__}: {exc}"
    with interrupts.held():  # told FAIL and its run ended, or neither
        current.trial.set_user_attr("fail_reason", reason[:1000])
        current.tag_fail_reason(reason)
        current.end_run("FAIL", "KILLED" if interrupted else "FAILED")
        current.study.tell(current.trial, state=TrialState.FAIL)
        if interrupted:
            with study_lock(current.study, current.home):
                recovery.retry(current.study, current.trial.params)
    if interrupted:
        raise exc
    if echo:
        print(f"trial {current.trial.number} failed: {reason[:300]}", flush=True)
    return TrialState.FAIL


def _keep_only_best_model(study: optuna.Study) -> None:
    """Only the best trial's model will be logged: keep its folder, delete the other complete trials'."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if Path(t.user_attrs.get("model_dir", "")).is_dir()]
    best = best_trial(study)
    for trial in complete:
        if best is None or trial.number != best.number:
            shutil.rmtree(Path(trial.user_attrs["model_dir"]).parent, ignore_errors=True)  # its checkpoints/<run id>/
