"""What a sweep reports: the summary table on the console, and the summary and plots on its parent run."""
from __future__ import annotations

import contextlib
import functools
import math
import statistics
import warnings
from collections.abc import Iterator

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from .. import tracking
from ..experiment.metric_keys import METRIC_KEYS
from ..experiment.spec import ExperimentSpec
from ..scoring import evidence
from .study import FINAL_STATES, best_trial, top_trials


def format_param(value) -> str:
    """A search-space value for people to read: floats to 3 significant digits, anything else (str, bool, int)
    as itself."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def log_parent_summary(run: tracking.Run, study: optuna.Study, best: optuna.trial.FrozenTrial | None) -> None:
    """Trial counts, the best trial and its params, and the plots, on the sweep's run. Call under the study lock."""
    counts = {state.name: len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    metrics = {f"trials_{k.lower()}": v for k, v in counts.items() if v}
    logged = run.read().data.metrics
    if all(logged.get(k) == v for k, v in metrics.items()) and logged.get("best_trial") == getattr(best, "number", None):
        return  # a parallel worker or an earlier run already logged this very summary (and its plots)
    run.metrics(metrics)
    if best is None:
        return
    run.metrics({"best_objective": best.value, "best_trial": best.number})
    run.tags({f"best_{k}": str(v) for k, v in best.params.items()})
    edges = range_edges(best)
    if edges:
        run.tags({"best_at_range_edge": ", ".join(f"{k} ({side})" for k, side in edges.items())})
    _log_plots(run, study)


def separation(study: optuna.Study, spec: ExperimentSpec) -> tuple[int, int, evidence.Difference] | None:
    """(best trial, runner-up, the best against the runner-up on the objective): a paired comparison on the
    validation images both were scored on, from the per-image scores their runs logged (nothing is captioned
    again). None with fewer than two complete trials, or an objective with no per-image scores (loss)."""
    from ..scoring.evaluation import SplitScores

    top = top_trials(study, 2)
    if len(top) < 2 or spec.objective_metric not in METRIC_KEYS:
        return None
    best, runner_up = top
    scores = [SplitScores.from_table(tracking.Run(t.user_attrs["mlflow_run_id"]).table_columns(
        "per_image/validation.json"), "validation", {}, idf="") for t in (runner_up, best)]
    difference = scores[0].paired(scores[1], spec.bootstrap_resamples or 1000, spec.seed)[spec.objective_metric]
    return best.number, runner_up.number, difference


def separation_line(best: int, runner_up: int, difference: evidence.Difference, confirming: bool = False) -> str:
    """Whether the sweep's best trial stands out from the runner-up, in one line; where it does not, what decides
    (`confirming`: a top-k confirmation will) or how to make it decide."""
    verdict = difference.verdict(a=f"trial {runner_up}", b=f"trial {best}")
    if difference.significant() or not difference.tested:
        return f"best vs runner-up on the validation images: {verdict}"
    then = ("the confirmation's fresh seeds decide" if confirming else "either could be the best (--set confirm_top=2 "
            "--set confirm_seeds=3 trains both again with 3 fresh seeds each and registers the better mean)")
    return f"best vs runner-up on the validation images: {verdict}: the two are indistinguishable, and {then}"


def log_separation(run: tracking.Run, best: int, runner_up: int, difference: evidence.Difference,
                   confirming: bool = False) -> None:
    run.tags({"best_vs_runner_up": separation_line(best, runner_up, difference, confirming),
              "runner_up_trial": runner_up})
    values = {"runner_up_difference": difference.difference, "runner_up_ci_low": difference.ci_low,
              "runner_up_ci_high": difference.ci_high, "runner_up_p_value": difference.p_value}
    run.metrics({key: value for key, value in values.items() if value is not None})  # none on too few images


EDGE_SHARE = 0.05  # a best value within this share of its range from a bound (on the range's own scale) is at its edge


def range_edges(best: optuna.trial.FrozenTrial) -> dict[str, str]:
    """The searched ranges whose best value sits at their "top" or "bottom": the optimum may lie beyond, and the
    range is worth widening there (the tiny sweep's best trials sat at its 12-epoch top; 20 epochs scored higher,
    BENCHMARKS.md). Read from the trial's own distributions, so it holds for any study. Choices, and integer ranges
    of fewer than three values (all edge), are skipped."""
    edges = {}
    for key, dist in best.distributions.items():
        if not isinstance(dist, (FloatDistribution, IntDistribution)) or dist.high <= dist.low:
            continue
        if isinstance(dist, IntDistribution) and (dist.high - dist.low) // dist.step < 2:
            continue
        scale = math.log if dist.log else float
        position = (scale(best.params[key]) - scale(dist.low)) / (scale(dist.high) - scale(dist.low))
        if position >= 1 - EDGE_SHARE:
            edges[key] = "top"
        elif position <= EDGE_SHARE:
            edges[key] = "bottom"
    return edges


def range_edge_advice(best: optuna.trial.FrozenTrial) -> list[str]:
    """One console line per range whose best value sits at an edge, saying which way to widen it."""
    lines = []
    for key, side in range_edges(best).items():
        dist = best.distributions[key]
        beyond = "above" if side == "top" else "below"
        lines.append(f"note: the best {key} ({format_param(best.params[key])}) is at the {side} of its range "
                     f"{format_param(dist.low)}..{format_param(dist.high)}: a better value may lie {beyond} it; "
                     f"widen the range in search_space() and run a new sweep (--new) to find out")
    return lines


def _log_plots(run: tracking.Run, study: optuna.Study) -> None:
    with _agg_backend():
        _plot(run, study)


@contextlib.contextmanager
def _agg_backend() -> Iterator[None]:
    """Optuna's plots need a canvas that renders off screen (Agg): switched to for the plots, then back, so a
    notebook's backend is the same afterwards."""
    import matplotlib
    import matplotlib.pyplot as plt

    previous = matplotlib.get_backend()
    plt.switch_backend("Agg")
    try:
        yield
    finally:
        plt.switch_backend(previous)


def _plot(run: tracking.Run, study: optuna.Study) -> None:
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    # the objective after each epoch of every trial, pruned ones included: why a trial was stopped when it was
    plots = {"optimization_history.png": ovm.plot_optimization_history,
             "intermediate_values.png": ovm.plot_intermediate_values}
    if len(complete) >= 2:
        varied = [key for key in study.best_trial.params if len({repr(t.params.get(key)) for t in complete}) >= 2]
        if len(varied) >= 2:
            plots["param_importances.png"] = ovm.plot_param_importances
            plots["contour.png"] = functools.partial(ovm.plot_contour, params=varied)
        else:  # one varied parameter holds all the importance (a bar at 100%, and a forest fit of seconds for it)
            run.tags({"plot_skipped_param_importances.png":
                      f"{', '.join(varied) or 'no parameter'} varied over the complete trials: nothing to rank"})
            fixed = ", ".join(sorted(set(study.best_trial.params) - set(varied)))
            if fixed:  # Optuna would draw an empty contour and log a warning per parameter
                run.tags({"plot_skipped_contour.png":
                          f"{fixed}: one value over the complete trials, nothing to contour"})
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                # Optuna marks its matplotlib plots "experimental" (an interface that may change) at every call:
                # nothing a user can act on. Its other warnings (e.g. equal importances) still show.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = plot(study)
        except (ValueError, RuntimeError) as exc:  # e.g. a parameter that never varied
            run.tags({f"plot_skipped_{name}": str(exc)[:200]})
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        run.figure(figure, f"plots/{name}")
        plt.close(figure)


def summary_table(study: optuna.Study) -> str:
    best = best_trial(study)
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


# --- the console's overall line at each trial's start and end


def trial_started(study: optuna.Study, spec: ExperimentSpec, number: int, params: dict) -> str:
    shown = "  ".join(f"{k}={format_param(v)}" for k, v in params.items())
    return f"\ntrial {number}: {shown}   [{sweep_status(study, spec)}]"


def trial_ended(study: optuna.Study, spec: ExperimentSpec, number: int) -> str:
    trial = study.get_trials(deepcopy=False)[number]
    value = f" {spec.objective_metric} {trial.value:.4f}" if trial.value is not None else ""
    took = f" in {_duration(trial.duration.total_seconds())}" if trial.duration else ""
    return f"trial {number} {trial.state.name}{value}{took}   [{sweep_status(study, spec)}]"


def sweep_status(study: optuna.Study, spec: ExperimentSpec) -> str:
    """Trials done of the total (pruned, failed), the best so far, and the time left: the mean duration of the
    finished trials times the trials left, shared by the workers running trials now."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state in FINAL_STATES]
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    failed = sum(t.state == TrialState.FAIL for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    best = best_trial(study)
    text = f"sweep {len(done)}/{spec.n_trials} done, {pruned} pruned, {failed} failed"
    text += f"; best {spec.objective_metric} {best.value:.4f} (trial {best.number})" if best else "; no best yet"
    left = max(0, spec.n_trials - len(done))
    durations = [t.duration.total_seconds() for t in done if t.duration]
    if not left:
        return text
    if not durations:
        return text + "; ETA after the first trial"
    return text + f"; ETA {_duration(statistics.mean(durations) * left / max(1, running))}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds // 3600:.0f} h {seconds % 3600 / 60:.0f} min"
