"""The Optuna study: storage in the blipexp home, seeded TPE, a median pruner fed each epoch's objective,
one nested MLflow run per trial under one parent run per sweep, and resume by re-running the same command.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
from optuna.trial import TrialState

from .data import CaptionData
from .spec import Choice, ExperimentSpec, FloatRange, IntRange, SearchDim
from .train import TrialResult, train_trial

FINAL_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # these count towards the total


@dataclass
class SweepResult:
    study: optuna.Study
    parent_run_id: str
    best_trial: optuna.trial.FrozenTrial | None
    best_model_dir: Path | None


def storage_url(home: Path) -> str:
    return f"sqlite:///{home / 'optuna.db'}"


def study_name(spec: ExperimentSpec) -> str:
    return f"{spec.name}-tiny" if spec.is_tiny else spec.name


def suggest(trial: optuna.Trial, key: str, dim: SearchDim):
    if isinstance(dim, FloatRange):
        return trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    if isinstance(dim, IntRange):
        return trial.suggest_int(key, dim.low, dim.high, step=dim.step)
    assert isinstance(dim, Choice), f"unknown search dimension {dim!r}"
    return trial.suggest_categorical(key, list(dim.options))


def open_study(spec: ExperimentSpec, home: Path, new: bool = False) -> optuna.Study:
    name, url = study_name(spec), storage_url(home)
    if new and name in optuna.get_all_study_names(storage=url):
        optuna.delete_study(study_name=name, storage=url)
    return optuna.create_study(
        study_name=name,
        storage=url,
        sampler=optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),  # a median of 3 finished trials
        direction=spec.objective_direction,
        load_if_exists=True,
    )


def fail_orphaned_trials(study: optuna.Study) -> int:
    """RUNNING trials whose process on this machine is gone: mark FAIL, end their MLflow run, retry the params."""
    host, failed = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") != host or _alive(attrs.get("pid")):
            continue
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if attrs.get("mlflow_run_id"):
            mlflow.MlflowClient().set_terminated(attrs["mlflow_run_id"], "KILLED")
            mlflow.MlflowClient().set_tag(attrs["mlflow_run_id"], "trial_state", "FAIL")
        study.enqueue_trial(trial.params, skip_if_exists=True)
        failed += 1
    return failed


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


def run_sweep(spec: ExperimentSpec, data: CaptionData, home: Path, *, new: bool = False, echo: bool = True) -> SweepResult:
    study = open_study(spec, home, new=new)
    retried = fail_orphaned_trials(study)
    if echo and retried:
        print(f"resume: {retried} trial(s) left running by a stopped process marked failed; their parameters are retried")
    parent_id = _parent_run(study, spec)
    with mlflow.start_run(run_id=parent_id):
        done = len(study.get_trials(deepcopy=False, states=FINAL_STATES))
        remaining = max(0, spec.n_trials - done)
        if echo:
            print(f"study {study.study_name}: {done} of {spec.n_trials} trials done, {remaining} to run", flush=True)
        if remaining:
            study.optimize(
                lambda trial: _objective(trial, spec, data, home, echo),
                n_trials=remaining,
                callbacks=[optuna.study.MaxTrialsCallback(spec.n_trials, states=FINAL_STATES)],
                catch=(Exception,),  # a failing trial is recorded FAIL; the sweep goes on
            )
        best = _best(study)
        _log_parent_summary(study, best)
    return SweepResult(study, parent_id, best, Path(best.user_attrs["model_dir"]) if best else None)


def _parent_run(study: optuna.Study, spec: ExperimentSpec) -> str:
    """The sweep's MLflow run: created once per study, reopened on resume."""
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
            "sampler": type(study.sampler).__name__ + f"(seed={spec.seed})",
            "pruner": type(study.pruner).__name__,
            "n_trials": spec.n_trials,
            "objective": f"{spec.objective_direction} val {spec.objective_metric}",
        })
        mlflow.log_dict(spec.to_dict(), "spec.json")
    study.set_user_attr("mlflow_parent_run_id", run.info.run_id)
    return run.info.run_id


def _objective(trial: optuna.Trial, spec: ExperimentSpec, data: CaptionData, home: Path, echo: bool) -> float:
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    params = {key: suggest(trial, key, dim) for key, dim in spec.search_space().items()}
    trial_spec = spec.replace(**params)
    run: dict[str, str] = {}

    def report(epoch: int, metrics: dict[str, float]) -> None:
        if not run:
            run["id"] = mlflow.active_run().info.run_id
            trial.set_user_attr("mlflow_run_id", run["id"])
        if epoch == 0:
            return
        trial.report(metrics[spec.objective_metric], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    if echo:
        print(f"\ntrial {trial.number}: " + "  ".join(f"{k}={v:.3g}" for k, v in params.items()), flush=True)
    started = time.perf_counter()
    try:
        result = train_trial(trial_spec, data, home, run_name=f"trial-{trial.number}", listeners=[report],
                             extra_tags={"optuna_study": trial.study.study_name, "optuna_trial": str(trial.number)},
                             nested=True, echo=echo)
    except optuna.TrialPruned:
        _end_trial_run(run, "PRUNED", "FINISHED", started, home)
        raise
    except Exception:
        _end_trial_run(run, "FAIL", "FAILED", started, home)
        raise
    _end_trial_run(run, "COMPLETE", "FINISHED", started, home)
    trial.set_user_attr("model_dir", str(result.model_dir))
    trial.set_user_attr("seconds", time.perf_counter() - started)
    _keep_only_best_model(trial.study, result)
    return result.objective


def _end_trial_run(run: dict[str, str], state: str, status: str, started: float, home: Path) -> None:
    if "id" not in run:
        return
    if state != "COMPLETE":  # an unfinished trial's checkpoints are never used
        shutil.rmtree(home / "checkpoints" / run["id"], ignore_errors=True)
    client = mlflow.MlflowClient()
    client.set_tag(run["id"], "trial_state", state)
    client.log_metric(run["id"], "trial_seconds", time.perf_counter() - started)
    client.set_terminated(run["id"], status)


def _keep_only_best_model(study: optuna.Study, result: TrialResult) -> None:
    """Only the best trial's model will be logged: keep its folder, delete the others'."""
    previous = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if Path(t.user_attrs.get("model_dir", "")).is_dir()]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    champion = (max if maximize else min)(previous, key=lambda t: t.value, default=None)
    improved = champion is None or (result.objective > champion.value if maximize else result.objective < champion.value)
    for folder in [t.user_attrs["model_dir"] for t in previous] if improved else [result.model_dir]:
        shutil.rmtree(Path(folder).parent, ignore_errors=True)  # the trial's whole checkpoints/<run id>/


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def _log_parent_summary(study: optuna.Study, best: optuna.trial.FrozenTrial | None) -> None:
    counts = {state.name: len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    mlflow.log_metrics({f"trials_{k.lower()}": v for k, v in counts.items() if v})
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
        rows.append([f"{mark}{t.number}", *(f"{t.params[k]:.3g}" if k in t.params else "-" for k in keys),
                     t.state.name, "-" if t.value is None else f"{t.value:.4f}",
                     f"{t.user_attrs['seconds']:.0f}" if "seconds" in t.user_attrs else "-"])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [header, *rows]]
    return "\n".join(lines + ["(* best trial)"])
