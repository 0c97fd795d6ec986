"""The Optuna study: storage in the blipexp home, seeded TPE, a median pruner fed each epoch's objective,
one nested MLflow run per trial under one parent run per sweep, and resume by re-running the same command.

Faults: several processes may run the same sweep at once on one machine (a journal-file study, and a lock in
the home around every decision that must be taken once: creating the sweep run, starting a trial while the
total is not reached, keeping the best model, registering). A trial whose process was killed is marked FAIL
by the next process to start, its MLflow run ended KILLED and its checkpoints deleted (never reused), and
its params retried. A NaN or inf objective fails the trial with the reason on the trial and its run.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
from optuna.trial import TrialState

from . import locks, scaleout
from .data import CaptionData
from .spec import Choice, ExperimentSpec, FloatRange, IntRange, SearchDim
from .train import train_trial, untrained_key

FINAL_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # these count towards the total
JOURNAL = "optuna.journal"  # the study storage in the blipexp home
POLL_SECONDS = 2.0  # how often a worker with nothing left to start looks at the others' trials


@dataclass
class SweepResult:
    study: optuna.Study
    parent_run_id: str
    best_trial: optuna.trial.FrozenTrial | None
    best_model_dir: Path | None


class _TrialStopped(Exception):
    """The trial's objective is unusable (NaN, inf): the trial fails with this reason."""


def optuna_storage(home: Path, url: str | None = None) -> optuna.storages.BaseStorage:
    """The study storage: `url` (an RDB such as PostgreSQL, for workers on several machines) if given, else a
    journal file in home. A journal file under Optuna's lock takes parallel workers on one machine, which
    SQLite does not (\"database is locked\")."""
    if url:
        return scaleout.rdb_storage(url)
    home.mkdir(parents=True, exist_ok=True)
    path = str(home / JOURNAL)
    storage = JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    _import_sqlite_studies(home, storage)
    return storage


def _import_sqlite_studies(home: Path, storage: optuna.storages.BaseStorage) -> None:
    """Studies from before the journal (home/optuna.db) are copied into it once, so they still resume."""
    old = home / "optuna.db"
    if not old.is_file():
        return
    with locks.hold(home, "optuna-import"):
        if not old.is_file():  # another process imported it meanwhile
            return
        for summary in optuna.get_all_study_summaries(storage=f"sqlite:///{old}", include_best_trial=False):
            optuna.copy_study(from_study_name=summary.study_name, from_storage=f"sqlite:///{old}",
                              to_storage=storage)
        old.rename(old.with_name("optuna.db.imported"))


def format_param(value) -> str:
    """A search-space value for people to read: floats to 3 significant digits, anything else (str, bool, int)
    as itself."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def study_name(spec: ExperimentSpec) -> str:
    return f"{spec.name}-tiny" if spec.is_tiny else spec.name


def suggest(trial: optuna.Trial, key: str, dim: SearchDim):
    if isinstance(dim, FloatRange):
        return trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    if isinstance(dim, IntRange):
        return trial.suggest_int(key, dim.low, dim.high, step=dim.step)
    assert isinstance(dim, Choice), f"unknown search dimension {dim!r}"
    return trial.suggest_categorical(key, list(dim.options))


def open_study(spec: ExperimentSpec, home: Path, new: bool = False,
               storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    name, storage = study_name(spec), storage or optuna_storage(home)
    if new and name in optuna.get_all_study_names(storage=storage):
        optuna.delete_study(study_name=name, storage=storage)
    return optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler(spec, 0),
        pruner=(optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)  # a median of 3 finished trials
                if spec.prune else optuna.pruners.NopPruner()),
        direction=spec.direction,
        load_if_exists=True,  # a parallel worker may create it first
    )


def sampler(spec: ExperimentSpec, n_trials_so_far: int) -> optuna.samplers.BaseSampler:
    """Seeded TPE, reseeded for each new trial by its position in the study: parallel workers (and a resumed run)
    would otherwise draw the same parameters from the same seed. Still one fixed sequence per study."""
    return optuna.samplers.TPESampler(seed=spec.seed + n_trials_so_far, n_startup_trials=4)


def fail_orphaned_trials(study: optuna.Study) -> int:
    """RUNNING trials whose process on this machine is gone: mark FAIL, retry their params. Call under the study lock.

    A RUNNING trial without host and pid lost its process between `ask` and recording them (both happen
    under the lock, so no live worker is in that window)."""
    host, failed = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if "host" in attrs and (attrs["host"] != host or _alive(attrs.get("pid"))):
            continue
        scaleout.storage_of(study).set_trial_user_attr(scaleout.trial_id(study, trial.number), "fail_reason",
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


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reconcile_runs(study: optuna.Study, home: Path) -> int:
    """Make each finished trial's MLflow run agree with it: runs a killed process left RUNNING end KILLED (their
    unfinished checkpoints deleted), or FINISHED for a finished trial whose run was re-opened by a registration
    that was killed or interrupted. Also covers a run stopped before it was recorded on its trial. Call under
    the study lock; returns how many runs it changed."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.optuna_study = '{study.study_name}'")
    client, changed = mlflow.MlflowClient(), 0
    for run in runs:
        trial = by_number.get(int(run.data.tags.get("optuna_trial", -1)))  # -1: the sweep run itself
        if trial is None or trial.state == TrialState.RUNNING:
            continue  # a live worker's trial (orphans were failed before this is called)
        run_id, status = run.info.run_id, run.info.status
        finished = trial.state in FINAL_STATES and trial.user_attrs.get("mlflow_run_id") == run_id
        if finished and status != "FINISHED":
            client.set_tag(run_id, "trial_state", trial.state.name)
            client.set_terminated(run_id, "FINISHED")
        elif not finished and status == "RUNNING":
            shutil.rmtree(home / "checkpoints" / run_id, ignore_errors=True)
            client.set_tag(run_id, "fail_reason", _fail_reason(trial))
            client.set_tag(run_id, "trial_state", "FAIL")
            client.set_terminated(run_id, "KILLED")
        else:
            continue
        changed += 1
    return changed


def _fail_reason(trial: optuna.trial.FrozenTrial) -> str:
    """Why the trial's process stopped; a FAIL trial without a reason was failed by Optuna for a stale heartbeat."""
    if "fail_reason" in trial.user_attrs:
        return trial.user_attrs["fail_reason"]
    return scaleout.STALE_REASON if trial.state == TrialState.FAIL else "its process stopped (killed)"


def run_sweep(spec: ExperimentSpec, data: CaptionData, home: Path, *, new: bool = False, echo: bool = True,
              storage: optuna.storages.BaseStorage | None = None) -> SweepResult:
    """Run trials until the study holds spec.n_trials finished (COMPLETE or PRUNED) ones, with any number of
    workers running the same command (on this machine, or on several with a database `storage`); then wait for
    the others' trials to finish."""
    study = open_study(spec, home, new=new, storage=storage)
    with scaleout.study_lock(study, home):
        retried = fail_orphaned_trials(study)
        reconcile_runs(study, home)
        parent_id = _parent_run(study, spec)
    if echo and retried:
        print(f"resume: {retried} trial(s) left running by a stopped process marked failed; their parameters are retried")
    with mlflow.start_run(run_id=parent_id):
        try:
            _run_trials(study, spec, data, home, echo)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (cli): the sweep run ends KILLED, not FAILED
            mlflow.end_run("KILLED")
            raise
        with scaleout.study_lock(study, home):
            best = _best(study)
            _log_parent_summary(study, best)
    return SweepResult(study, parent_id, best, Path(best.user_attrs["model_dir"]) if best else None)


def counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINAL_STATES))


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
        with scaleout.study_lock(study, home):
            if fail_orphaned_trials(study) + scaleout.fail_stale_trials(study, retry):  # a worker died: end its run now
                reconcile_runs(study, home)
            running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            trial = None
            if counted(study) + running < spec.n_trials and failures_left > 0:
                study.sampler = sampler(spec, len(study.trials))
                trial = scaleout.ask(study)
                trial.set_user_attr("host", socket.gethostname())
                trial.set_user_attr("pid", os.getpid())
        if trial is not None:
            with scaleout.heartbeat(study, trial) as pulse:  # silence marks the trial dead to other machines' workers
                # A lost trial counts as a failure too: a worker whose every trial is lost stops.
                failures_left -= _run_trial(study, trial, spec, data, home, echo, pulse) == TrialState.FAIL
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
    with mlflow.start_run(run_name=f"sweep-{study.study_name}", tags={
        "blipexp.role": "sweep", "optuna_study": study.study_name, "profile": "tiny" if spec.is_tiny else "full",
        "mlflow.note.content": spec.hypothesis,
    }) as run:
        mlflow.log_params({
            "study_name": study.study_name,
            "search_space": json.dumps({k: repr(v) for k, v in spec.search_space().items()}),
            "sampler": type(study.sampler).__name__ + f"(seed={spec.seed} + trial position)",
            "pruner": type(study.pruner).__name__,
            "n_trials": spec.n_trials,
            "objective": f"{spec.direction} val {spec.objective_metric}",
        })
        mlflow.log_dict(spec.to_dict(), "spec.json")
    study.set_user_attr("mlflow_parent_run_id", run.info.run_id)
    return run.info.run_id


def _run_trial(study: optuna.Study, trial: optuna.Trial, spec: ExperimentSpec, data: CaptionData, home: Path,
               echo: bool, pulse: scaleout.Pulse) -> TrialState:
    """Train one trial and tell the study how it ended; the MLflow run ends with the same state.

    Ctrl-C / SIGTERM: the trial is told FAIL (its params are retried on resume), its run ends KILLED, and
    the interrupt goes on up. Failed by another worker meanwhile (`pulse`): see _lost."""
    run: dict[str, str] = {}
    known_untrained: dict[str, float] | None = None  # set below, before training starts

    def report(epoch: int, metrics: dict[str, float]) -> None:
        pulse.check()  # an epoch's end is a safe point to stop a trial another worker failed
        if not run:
            run["id"] = mlflow.active_run().info.run_id
            trial.set_user_attr("mlflow_run_id", run["id"])
        if epoch == 0:
            if known_untrained is None:  # the first trial with this initial model: later ones reuse its scores
                study.set_user_attr(untrained_attr, metrics)
            return
        trial.report(metrics[spec.objective_metric], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    started = time.perf_counter()
    try:
        params = {key: suggest(trial, key, dim) for key, dim in spec.search_space().items()}
        if echo:
            print(f"\ntrial {trial.number}: " + "  ".join(f"{k}={format_param(v)}" for k, v in params.items()),
                  flush=True)
        trial_spec = spec.replace(**params)
        untrained_attr = f"untrained:{untrained_key(trial_spec, data.fingerprint)}"
        known_untrained = study.user_attrs.get(untrained_attr)
        result = train_trial(trial_spec, data, home, run_name=f"trial-{trial.number}", listeners=[report],
                             extra_tags={"optuna_study": study.study_name, "optuna_trial": str(trial.number)},
                             nested=True, echo=echo, untrained=known_untrained)
        if not math.isfinite(result.objective):
            raise _TrialStopped(f"objective {spec.objective_metric} is {result.objective}")
    except optuna.TrialPruned:
        with scaleout.study_lock(study, home):  # stale trials are failed under this lock: no one fails it meanwhile
            if not scaleout.is_running(study, trial):
                return _lost(study, trial, run, started, home, echo)
            _end_trial_run(run, "PRUNED", "FINISHED", started, home)
            study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    except (scaleout.TrialLost, optuna.exceptions.UpdateFinishedTrialError):  # failed before the pulse noticed
        return _lost(study, trial, run, started, home, echo)
    except (Exception, KeyboardInterrupt) as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        reason = f"interrupted ({exc or 'SIGINT'})" if interrupted else f"{type(exc).__name__}: {exc}"
        _fail(study, trial, run, reason, "KILLED" if interrupted else "FAILED", started, home)
        if interrupted:
            with scaleout.study_lock(study, home):
                retry(study, trial.params)  # not its fault: the same params run again on resume
            raise
        if echo:
            print(f"trial {trial.number} failed: {reason[:300]}", flush=True)
        return TrialState.FAIL
    with scaleout.study_lock(study, home):  # one worker at a time decides which model folder to keep
        if not scaleout.is_running(study, trial):  # failed by another worker during its last epoch
            return _lost(study, trial, run, started, home, echo)
        trial.set_user_attr("model_dir", str(result.model_dir))
        trial.set_user_attr("seconds", time.perf_counter() - started)
        _end_trial_run(run, "COMPLETE", "FINISHED", started, home)
        study.tell(trial, result.objective)
        _keep_only_best_model(study)
    return TrialState.COMPLETE


def _lost(study: optuna.Study, trial: optuna.Trial, run: dict[str, str], started: float, home: Path,
          echo: bool) -> TrialState:
    """Another worker failed this trial behind its back (its heartbeats came later than the grace period) and
    queued its params again: end its run KILLED and delete its checkpoints and model (never registered); the
    trial is already FAIL, so the study is not told."""
    _tag_fail_reason(study, trial, run, scaleout.LOST_REASON)
    _end_trial_run(run, "FAIL", "KILLED", started, home)
    if echo:
        print(f"trial {trial.number} stopped: {scaleout.LOST_REASON}", flush=True)
    return TrialState.FAIL


def _fail(study: optuna.Study, trial: optuna.Trial, run: dict[str, str], reason: str, status: str, started: float,
          home: Path) -> None:
    trial.set_user_attr("fail_reason", reason[:1000])
    _tag_fail_reason(study, trial, run, reason)
    _end_trial_run(run, "FAIL", status, started, home)
    study.tell(trial, state=TrialState.FAIL)


def _tag_fail_reason(study: optuna.Study, trial: optuna.Trial, run: dict[str, str], reason: str) -> None:
    if "id" not in run:  # stopped before its first evaluation recorded the run: find it by its tags
        found = mlflow.search_runs(search_all_experiments=True, output_format="list", filter_string=(
            f"tags.optuna_study = '{study.study_name}' and tags.optuna_trial = '{trial.number}'"))
        run.update({"id": found[0].info.run_id} if found else {})
    if "id" in run:
        mlflow.MlflowClient().set_tag(run["id"], "fail_reason", reason[:5000])


def _end_trial_run(run: dict[str, str], state: str, status: str, started: float, home: Path) -> None:
    if "id" not in run:
        return  # no run was started
    if state != "COMPLETE":  # an unfinished trial's checkpoints are never used
        shutil.rmtree(home / "checkpoints" / run["id"], ignore_errors=True)
    client = mlflow.MlflowClient()
    client.set_tag(run["id"], "trial_state", state)
    client.log_metric(run["id"], "trial_seconds", time.perf_counter() - started)
    client.set_terminated(run["id"], status)


def _keep_only_best_model(study: optuna.Study) -> None:
    """Only the best trial's model will be logged: keep its folder, delete the other complete trials'."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if Path(t.user_attrs.get("model_dir", "")).is_dir()]
    best = _best(study)
    for trial in complete:
        if best is None or trial.number != best.number:
            shutil.rmtree(Path(trial.user_attrs["model_dir"]).parent, ignore_errors=True)  # its checkpoints/<run id>/


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def _log_parent_summary(study: optuna.Study, best: optuna.trial.FrozenTrial | None) -> None:
    counts = {state.name: len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    metrics = {f"trials_{k.lower()}": v for k, v in counts.items() if v}
    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.metrics
    if all(logged.get(k) == v for k, v in metrics.items()) and logged.get("best_trial") == getattr(best, "number", None):
        return  # a parallel worker or an earlier run already logged this very summary (and its plots)
    mlflow.log_metrics(metrics)
    if best is None:
        return
    mlflow.log_metrics({"best_objective": best.value, "best_trial": best.number})
    mlflow.set_tags({f"best_{k}": str(v) for k, v in best.params.items()})
    _log_plots(study)


def _log_plots(study: optuna.Study) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to files
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = {"optimization_history.png": ovm.plot_optimization_history}
    if len(complete) >= 2:
        plots["param_importances.png"] = ovm.plot_param_importances
        if len(study.best_trial.params) >= 2:
            plots["contour.png"] = ovm.plot_contour
    for name, plot in plots.items():
        try:
            axes = plot(study)
        except (ValueError, RuntimeError) as exc:  # e.g. a parameter that never varied
            mlflow.set_tag(f"plot_skipped_{name}", str(exc)[:200])
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        mlflow.log_figure(figure, f"plots/{name}")
        plt.close(figure)


def summary_table(study: optuna.Study) -> str:
    best = _best(study)
    keys = sorted({k for t in study.trials for k in t.params})
    header = ["trial", *keys, "state", "objective", "seconds"]
    rows = []
    for t in study.trials:
        mark = "*" if best is not None and t.number == best.number else " "
        rows.append([f"{mark}{t.number}", *(format_param(t.params[k]) if k in t.params else "-" for k in keys),
                     t.state.name, "-" if t.value is None else f"{t.value:.4f}",
                     f"{t.user_attrs['seconds']:.0f}" if "seconds" in t.user_attrs else "-"])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [header, *rows]]
    return "\n".join(lines + ["(* best trial)"])
