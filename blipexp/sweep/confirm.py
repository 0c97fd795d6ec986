"""confirm_seeds: the sweep's chosen parameters trained again with fresh seeds, to tell how much of the best trial's
lead was its seed. The best trial was picked as the top of several noisy values, so its own value is biased upward
(the winner's curse): the mean and standard deviation are over the fresh seeds only, the chosen trial's value kept
beside them.

A confirmation run is a unit of work: a configuration (a completed trial) and a seed, never the trial's own. The
units are recorded in the study's user attrs (`confirm:<trial>:<seed>`), which every worker of the sweep sees: each
is claimed under the study lock, trained outside it and recorded done under it again, so it trains once however
many workers there are; one claimed by a process of this machine that is gone (killed) is claimed again, one a live
worker holds is left to it. Whoever finds every unit done, under the lock, logs the result once: on the sweep run
the chosen trial's value and the mean and sd over the fresh seeds of the objective and of each test metric
(`confirm_objective_chosen`, `confirm_objective_mean`, `confirm_objective_sd`, ...), on the registered version
(still the best trial's) the same as tags, the marker tag last.

Each confirmation is a run nested under the sweep run (tag blipexp.role=confirm_seed); its model is not kept.
"""
from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from .. import registry, tracking
from ..data import CaptionData
from ..experiment.spec import ExperimentSpec
from ..runtime import interrupts, liveness
from ..training.train import train_trial
from .study import study_lock

SPREAD_TAG = "seed_spread_objective"  # on the version: the spread over the fresh seeds; present once confirmed
CLAIMED, DONE, RELEASED = "claimed", "done", "released"  # a unit's states in its record


@dataclass(frozen=True)
class Unit:
    """One confirmation run: a configuration (a completed trial's parameters) trained with a fresh seed."""

    trial: int  # the trial's number
    seed: int

    @property
    def attr(self) -> str:
        """Its record among the study's user attrs."""
        return f"confirm:{self.trial}:{self.seed}"


@dataclass
class Spread:
    """One value (the objective, a test metric) of the chosen trial, beside the same over the fresh seeds."""

    chosen: float | None  # the chosen trial's own, biased upward: it was picked for being the best
    fresh: list[float]  # one per fresh seed

    @property
    def mean(self) -> float:
        return statistics.fmean(self.fresh)

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.fresh) if len(self.fresh) > 1 else None

    def text(self) -> str:
        """e.g. '5.2134 ± 0.1410 over 3 fresh seeds (the chosen trial: 5.4012)'."""
        spread = f" ± {self.sd:.4f}" if self.sd is not None else ""
        seeds = f"{len(self.fresh)} fresh seed{'s' if len(self.fresh) > 1 else ''}"
        chosen = f" (the chosen trial: {self.chosen:.4f})" if self.chosen is not None else ""
        return f"{self.mean:.4f}{spread} over {seeds}{chosen}"


def units(spec: ExperimentSpec, trial: optuna.trial.FrozenTrial, count: int) -> list[Unit]:
    """`count` fresh seeds for the trial's configuration: its own seed + 1 .. + count."""
    own = spec.replace(**trial.params).seed
    return [Unit(trial.number, own + offset) for offset in range(1, count + 1)]


def confirm_seeds(spec: ExperimentSpec, data: CaptionData, home: Path, study: optuna.Study,
                  best: optuna.trial.FrozenTrial, sweep_run_id: str, version, echo: bool = True
                  ) -> dict[str, Spread] | None:
    """Train the best trial's confirmation units that no worker has claimed; once all are done, log their spread
    on the sweep run and tag it on `version`, once. Returns {"objective" | "test_<key>": Spread} when this worker
    logged it; None when another did, or will (its units still train)."""
    planned = units(spec, best, spec.confirm_seeds)
    configurations = {best.number: spec.replace(**best.params)}
    run_units(study, home, planned,
              lambda unit: _train(unit, configurations[unit.trial], data, home, sweep_run_id, echo))
    return _log_once(spec, study, home, planned, best, sweep_run_id, version)


def run_units(study: optuna.Study, home: Path, planned: list[Unit], train: Callable[[Unit], dict[str, Any]]) -> None:
    """Train, one at a time, the planned units no live worker has claimed: each claimed under the study lock, trained
    outside it (`train` returns what to record of it), recorded done under it. A unit whose training raised (an
    error, Ctrl-C) is released for another worker or the next run of the command, and the error goes on up."""
    while True:
        interrupts.check()  # between units: a safe point to stop at
        with study_lock(study, home):
            records = study.user_attrs
            unit = next((u for u in planned if _claimable(records.get(u.attr))), None)
            if unit is None:
                return
            study.set_user_attr(unit.attr, {"state": CLAIMED, **liveness.this_process()})
        try:
            outcome = train(unit)
        except BaseException:
            with study_lock(study, home):
                study.set_user_attr(unit.attr, {"state": RELEASED})
            raise
        with study_lock(study, home):
            study.set_user_attr(unit.attr, {"state": DONE, **outcome})


def _claimable(record: dict | None) -> bool:
    """Never claimed, released, or claimed by a process of this machine that is gone."""
    if record is None or record["state"] == RELEASED:
        return True
    return record["state"] == CLAIMED and liveness.on_this_host(record) and not liveness.alive(record)


def _train(unit: Unit, configuration: ExperimentSpec, data: CaptionData, home: Path, sweep_run_id: str,
           echo: bool) -> dict[str, Any]:
    """One confirmation run, nested under the sweep run; what is recorded of it: its run, objective, test metrics."""
    if echo:
        print(f"confirm: trial {unit.trial}'s parameters with seed {unit.seed}", flush=True)
    with tracking.reopen(sweep_run_id):
        result = train_trial(configuration.replace(seed=unit.seed), data, home, run_name=f"confirm-seed-{unit.seed}",
                             nested=True, echo=echo, extra_tags={"blipexp.role": "confirm_seed",
                                                                 "sweep_run_id": sweep_run_id,
                                                                 "confirms_trial": str(unit.trial)})
    shutil.rmtree(result.model_dir.parent, ignore_errors=True)  # never registered: only its scores count
    return {"run_id": result.run_id, "objective": result.objective, "test": result.test_metrics}


def _log_once(spec: ExperimentSpec, study: optuna.Study, home: Path, planned: list[Unit],
              best: optuna.trial.FrozenTrial, sweep_run_id: str, version) -> dict[str, Spread] | None:
    """Under the study lock: when every unit is done and the version has no spread yet, log and tag it."""
    with study_lock(study, home):
        records = study.user_attrs
        if any(records.get(u.attr, {}).get("state") != DONE for u in planned):
            return None  # units of another worker still train: the spread is logged once they are done
        if SPREAD_TAG in registry.tags_of(version):
            return None  # logged already (by another worker)
        spread = spreads(best, [records[u.attr] for u in planned])
        run = tracking.Run(sweep_run_id)
        run.metrics({f"confirm_{name}_{stat}": value for name, values in spread.items()
                     for stat, value in (("chosen", values.chosen), ("mean", values.mean), ("sd", values.sd))
                     if value is not None})
        run.params({"confirm_fresh_seeds": ", ".join(str(u.seed) for u in planned)})
        key = f"test_{spec.objective_metric}"
        registry.tag_version(version, {**({f"seed_spread_{key}": spread[key].text()} if key in spread else {}),
                                       SPREAD_TAG: spread["objective"].text()})  # the marker tag last
    return spread


def spreads(best: optuna.trial.FrozenTrial, outcomes: list[dict[str, Any]]) -> dict[str, Spread]:
    """The objective and each test metric: the chosen trial's value beside the fresh seeds' (`outcomes`)."""
    chosen = tracking.Run(best.user_attrs["mlflow_run_id"]).read().data.metrics
    values = {"objective": Spread(best.value, [outcome["objective"] for outcome in outcomes])}
    for key in sorted({key for outcome in outcomes for key in outcome["test"]}):
        values[f"test_{key}"] = Spread(chosen.get(f"test_{key}"),
                                       [outcome["test"][key] for outcome in outcomes if key in outcome["test"]])
    return values
