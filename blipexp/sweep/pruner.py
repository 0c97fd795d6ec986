"""The sweep's pruner: a median rule that compares trials at the same point of their schedule, not the same epoch.

A sweep that searches `epochs` runs learning-rate schedules of different lengths. With a decaying schedule a
3-epoch trial's third epoch is its annealed end, while a 12-epoch trial is a quarter through its own; compared
epoch by epoch (Optuna's MedianPruner), long trials look worse than they will end, and are cut after most of
their cost is spent (BENCHMARKS.md: tiny sweeps' 12-epoch trials pruned at epochs 7 and 11).

So a trial at epoch e of E is compared with every complete trial at epoch floor(e/E * E') of its own E epochs:
the same fraction of the schedule, rounded towards the start (a trial is never held to a later point than its
own). The trial's best so far (as in Optuna's rule) is held to the median of the others' best by that point;
epochs are the steps trials report.
"""
from __future__ import annotations

import math
import statistics

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


class ScheduleMedianPruner(optuna.pruners.BasePruner):
    def __init__(self, default_epochs: int, n_startup_trials: int = 3, n_warmup_epochs: int = 1,
                 n_min_trials: int = 2):
        """default_epochs: a trial's epochs when the sweep does not search them. Nothing is pruned before
        n_startup_trials are complete, before a trial's n_warmup_epochs-th epoch, or against fewer than n_min_trials
        complete trials that have reached the same point of their schedule."""
        self.default_epochs = default_epochs
        self.n_startup_trials = n_startup_trials
        self.n_warmup_epochs = n_warmup_epochs
        self.n_min_trials = n_min_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        epoch = trial.last_step
        if epoch is None or epoch < self.n_warmup_epochs:
            return False
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(complete) < self.n_startup_trials:
            return False
        maximize = study.direction == StudyDirection.MAXIMIZE
        fraction = epoch / self._epochs(trial)
        others = [v for t in complete if not math.isnan(v := self._best_by(t, fraction, maximize))]
        current = self._best_by(trial, fraction, maximize)
        if len(others) < self.n_min_trials or math.isnan(current):
            return False
        median = statistics.median(others)
        return current < median if maximize else current > median

    def _epochs(self, trial: FrozenTrial) -> int:
        return scheduled_epochs(trial, self.default_epochs)

    def _best_by(self, trial: FrozenTrial, fraction: float, maximize: bool) -> float:
        """The trial's best reported value up to `fraction` of its schedule (NaN before its first report)."""
        epoch = best_epoch_by(trial.intermediate_values, epoch_at(fraction, self._epochs(trial)), maximize)
        return math.nan if epoch is None else trial.intermediate_values[epoch]


def scheduled_epochs(trial: FrozenTrial, default_epochs: int) -> int:
    """The epochs a trial's schedule runs: its searched `epochs`, else the spec's."""
    return int(trial.params.get("epochs", default_epochs))


def epoch_at(fraction: float, epochs: int) -> int:
    """The last epoch of an `epochs`-epoch schedule that is no later than `fraction` of it (0: none is)."""
    return math.floor(fraction * epochs + 1e-9)  # 1e-9: 3/12 * 12 must stay 3


def best_epoch_by(values: dict[int, float], last: int, maximize: bool) -> int | None:
    """The epoch up to `last` with the best value (None before the first)."""
    reported = {step: v for step, v in values.items() if step <= last and not math.isnan(v)}
    if not reported:
        return None
    return (max if maximize else min)(reported, key=reported.__getitem__)

