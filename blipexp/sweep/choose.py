"""Which configuration a sweep registers, and how sure that choice is, in one line.

- On the trials (no confirmation, or confirm_top=1): the best trial, the top of the trials' validation objectives,
  one seed each. Separated when the paired test of its per-image validation scores against the runner-up's
  (report.separation) finds a difference.
- On fresh seeds (confirm_top=K >= 2, confirm.py): the configuration with the best mean validation objective over
  its fresh seeds, whose original trial's model is registered: a trial that won on its seed's luck is not. Separated
  when that mean leads the next one's by more than two standard errors of the difference, sqrt(sd1²/n1 + sd2²/n2).

The sweep run gets the line (tag `choice`) and the tags `chosen_by`, `chosen_trial`, `chosen_separated` (absent when
untested), with confirmation the table confirmation.json (one row per configuration) and the chosen configuration's
spread (metrics confirm_<value>_mean, _sd, _chosen); the registered version gets the same tags and the spread as
seed_spread_objective, seed_spread_test_<objective>.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from .. import tracking
from ..scoring import evidence
from ..experiment.spec import ExperimentSpec
from .confirm import SPREAD_TAG, Spread, spreads
from .report import format_param
from .study import top_trials

CHOICE_TAG = "choice"  # on the sweep run: the one line
TABLE = "confirmation.json"  # on the sweep run: one row per confirmed configuration


@dataclass
class Configuration:
    """A confirmed configuration: its original trial, and its objective over its fresh seeds beside the trial's."""

    trial: optuna.trial.FrozenTrial
    seeds: list[int]
    objective: Spread


@dataclass
class Choice:
    chosen: optuna.trial.FrozenTrial  # its model is registered
    by: str  # e.g. "mean validation cider over 2 fresh seeds, top 3 configurations"
    separated: bool | None  # None: untested
    line: str  # how sure, for people: the console and the sweep run's `choice` tag
    configurations: list[Configuration] = field(default_factory=list)  # the confirmed ones, in trial rank
    spread: dict[str, Spread] = field(default_factory=dict)  # the chosen's objective and test metrics, fresh seeds

    def tags(self) -> dict[str, str]:
        separated = {} if self.separated is None else {"chosen_separated": str(self.separated).lower()}
        return {"chosen_by": self.by, "chosen_trial": str(self.chosen.number), **separated}

    def version_tags(self, spec: ExperimentSpec) -> dict[str, str]:
        key = f"test_{spec.objective_metric}"
        spread = {f"seed_spread_{key}": self.spread[key].text()} if key in self.spread else {}
        objective = {SPREAD_TAG: self.spread["objective"].text()} if self.spread else {}
        return {**self.tags(), **spread, **objective}

    def log(self, run: tracking.Run) -> None:
        """On the sweep run. A worker stopped halfway leaves some logged: the table is written only if absent."""
        if self.configurations and run.logged_dict(TABLE) is None:
            run.table(self.table(), TABLE)
        if self.spread:
            run.metrics({f"confirm_{name}_{stat}": value for name, values in self.spread.items()
                         for stat, value in (("chosen", values.chosen), ("mean", values.mean), ("sd", values.sd))
                         if value is not None})
            seeds = next(c.seeds for c in self.configurations if c.trial.number == self.chosen.number)
            run.params({"confirm_fresh_seeds": ", ".join(map(str, seeds))})
        run.tags({**self.tags(), CHOICE_TAG: self.line})

    def table(self) -> dict[str, list]:
        rows = self.configurations
        return {"trial": [c.trial.number for c in rows],
                "params": [", ".join(f"{k}={format_param(v)}" for k, v in c.trial.params.items()) for c in rows],
                "seeds": [", ".join(map(str, c.seeds)) for c in rows],
                "objective_mean": [c.objective.mean for c in rows],
                "objective_sd": [c.objective.sd for c in rows],
                "trial_objective": [c.trial.value for c in rows],  # its own seed's: the value it was ranked by
                "chosen": [c.trial.number == self.chosen.number for c in rows]}


def choose(spec: ExperimentSpec, study: optuna.Study, confirmed: list[optuna.trial.FrozenTrial],
           runs: dict[int, list[dict[str, Any]]], separation: tuple[int, int, evidence.Difference] | None) -> Choice:
    """The choice among the study's complete trials: on fresh seeds with two or more `confirmed` configurations
    (their recorded confirmation `runs`, confirm.outcomes), else on the trials (`separation`: report.separation)."""
    configurations = [Configuration(t, [run["seed"] for run in runs[t.number]],
                                    Spread(t.value, [run["objective"] for run in runs[t.number]])) for t in confirmed]
    if len(configurations) >= 2:
        choice = _on_fresh_seeds(spec, configurations)
    else:
        choice = _on_trials(spec, study, separation, configurations)
    if configurations:
        choice.spread = spreads(choice.chosen, runs[choice.chosen.number])
    return choice


def _on_trials(spec: ExperimentSpec, study: optuna.Study, separation: tuple[int, int, evidence.Difference] | None,
               configurations: list[Configuration]) -> Choice:
    (best,) = top_trials(study, 1)
    metric, trials = spec.objective_metric, len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    by = f"best validation {metric} of {trials} trial{'s' if trials > 1 else ''}, one seed each"
    separated, versus = _versus(metric, trials, separation)
    line = f"choice: trial {best.number} ({metric} {best.value:.4f}) by the {by}; {versus}"
    if configurations:
        fresh = configurations[0].objective
        line += f"; over {len(fresh.fresh)} fresh seed{'s' if len(fresh.fresh) > 1 else ''}: {_mean(fresh)}"
    return Choice(best, by, separated, line, configurations)


def _versus(metric: str, trials: int, separation: tuple[int, int, evidence.Difference] | None
            ) -> tuple[bool | None, str]:
    """Whether the best trial is separated from the runner-up (None: untested), and the words for it."""
    if separation is None:
        return None, ("no runner-up to compare with" if trials < 2 else
                      f"untested against the runner-up ({metric} has no per-image scores)")
    _, runner_up, difference = separation
    test = f"the runner-up, trial {runner_up} (paired test on {difference.images} validation images"
    if not difference.tested:
        return None, f"untested against {test}: too few)"
    separated = difference.significant()
    return separated, f"{'separated' if separated else 'not separated'} from {test}, p = {difference.p_value:.3f})"


def _on_fresh_seeds(spec: ExperimentSpec, configurations: list[Configuration]) -> Choice:
    """The best mean wins (ties: the better trial); separated by more than two standard errors of the difference."""
    sign = -1 if spec.greater_is_better else 1
    first, second = sorted(configurations, key=lambda c: sign * c.objective.mean)[:2]
    lead = abs(first.objective.mean - second.objective.mean)
    error = math.sqrt(sum(c.objective.sd ** 2 / len(c.objective.fresh) for c in (first, second)))
    separated = lead > 2 * error
    by = (f"mean validation {spec.objective_metric} over {spec.confirm_seeds} fresh seeds, "
          f"top {len(configurations)} configurations")
    line = (f"choice: trial {first.trial.number} by the {by}: {_mean(first.objective)} against trial "
            f"{second.trial.number}'s {_mean(second.objective)}; {'separated' if separated else 'not separated'}: "
            f"the lead {lead:.4f} is {'more than' if separated else 'within'} two standard errors of the difference "
            f"({2 * error:.4f})")
    argmax = configurations[0].trial
    if argmax.number != first.trial.number:
        line += f"; trial {argmax.number}, the best single trial ({argmax.value:.4f}), lost on the mean"
    return Choice(first.trial, by, separated, line, configurations)


def _mean(spread: Spread) -> str:
    return f"{spread.mean:.4f}" + (f" ± {spread.sd:.4f}" if spread.sd is not None else "")
