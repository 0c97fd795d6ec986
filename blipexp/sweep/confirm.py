"""confirm_seeds: the sweep's chosen parameters trained again with other seeds, to tell how much of the best trial's
lead was its seed. A sweep's best is the top of several noisy values; its spread over seeds says how far to trust it.

Each confirmation is a run nested under the sweep run (tag blipexp.role=confirm_seed); its model is not kept. The
sweep run gets the mean and standard deviation over the best trial and the K confirmations of the objective and of
each test metric; the registered version (still the best trial's) gets the same spread as tags.
"""
from __future__ import annotations

import shutil
import statistics
from pathlib import Path

import optuna

from .. import tracking
from ..data import CaptionData
from ..spec import ExperimentSpec
from ..train import train_trial

SPREAD_TAG = "seed_spread_objective"  # on the version: "mean ± sd over N seeds"; present once confirmed


def confirm_seeds(spec: ExperimentSpec, data: CaptionData, home: Path, best: optuna.trial.FrozenTrial,
                  sweep_run_id: str, echo: bool = True) -> dict[str, tuple[float, float]]:
    """Train the best trial's parameters with seeds seed+1 .. seed+K; return {name: (mean, sd)} over all K+1 runs
    for "objective" and each test metric ("test_<key>"), also logged on the sweep run."""
    chosen = spec.replace(**best.params)
    first = tracking.Run(best.user_attrs["mlflow_run_id"]).read().data.metrics
    values = {"objective": [best.value], **{k: [v] for k, v in first.items() if _is_test_metric(k)}}
    with tracking.reopen(sweep_run_id):
        for offset in range(1, spec.confirm_seeds + 1):
            seed = chosen.seed + offset
            if echo:
                print(f"confirm: trial {best.number}'s parameters with seed {seed} "
                      f"({offset} of {spec.confirm_seeds})", flush=True)
            result = train_trial(chosen.replace(seed=seed), data, home, run_name=f"confirm-seed-{seed}", nested=True,
                                 echo=echo, extra_tags={"blipexp.role": "confirm_seed", "sweep_run_id": sweep_run_id,
                                                        "confirms_trial": str(best.number)})
            shutil.rmtree(result.model_dir.parent, ignore_errors=True)  # never registered: only its scores count
            values["objective"].append(result.objective)
            for key, value in result.test_metrics.items():
                values.setdefault(f"test_{key}", []).append(value)
    spread = {name: (statistics.fmean(v), statistics.stdev(v)) for name, v in values.items() if len(v) > 1}
    run = tracking.Run(sweep_run_id)
    run.metrics({f"confirm_{name}_{stat}": value for name, (mean, sd) in spread.items()
                 for stat, value in (("mean", mean), ("sd", sd))})
    run.params({"confirm_seeds_runs": spec.confirm_seeds + 1})
    return spread


def _is_test_metric(key: str) -> bool:
    return key.startswith("test_") and not key.endswith(("_ci_low", "_ci_high"))


def spread_text(mean: float, sd: float, runs: int) -> str:
    return f"{mean:.4f} ± {sd:.4f} over {runs} seeds"
