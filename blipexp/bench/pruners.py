"""The paired pruner against the median rule: the sweep section's tiny football_lr_sweep (frozen encoder, cached
features) run with each, seed by seed: the chosen trial's validation and test objective, wall time, and the epochs
trained over all trials, which contention on a shared machine does not change as it changes wall time.

The two sweeps of a seed draw the same first trials (the sampler's seed), so their difference is paired: each
difference's mean over the seeds is shown with its standard error. The pruners alternate seed by seed, so a slower
stretch of a shared machine falls on both, and every sweep trains in the precision one probe chose."""
from __future__ import annotations

import statistics
from pathlib import Path

from .homes import new_home
from .sizes import Size, log
from .sweeps import blipexp_sweep, over_seeds, standard_error, sweep_spec

PRUNERS = ("median", "paired")
COMPARED = ("best", "test", "epochs", "seconds")  # paired minus median, per seed


def bench_pruners(size: Size, root: Path, probed: Path | None = None) -> dict:
    from ..model import precision

    base = sweep_spec(size).replace(freeze_vision_encoder=True)
    if probed is None:  # one probe for every sweep: on a busy machine two probes may pick different precisions
        probed = new_home(root / "probe")
        precision.used(base, probed)
    runs: dict[str, list[dict]] = {pruner: [] for pruner in PRUNERS}
    for seed in size.sweep_seeds:
        for pruner in PRUNERS:
            home = new_home(root / f"pruner-{pruner}-{seed}", probed)
            run = {"seed": seed, **blipexp_sweep(base.replace(seed=seed, pruner=pruner), home)}
            runs[pruner].append(run)
            log(f"pruners: {pruner}, seed {seed}: {run['seconds']:.0f} s, {run['epochs']} epochs trained, "
                f"{run['pruned']} of {run['trials']} pruned; chosen trial's {base.objective_metric} val "
                f"{run['best']:.3f}, test {run['test']:.3f}")
    differences = {key: [p[key] - m[key] for m, p in zip(runs["median"], runs["paired"])] for key in COMPARED}
    return {"alpha": base.prune_alpha, "trials": base.n_trials, "scenes": base.pitch_scenes,
            "pruners": {pruner: over_seeds(seeds) for pruner, seeds in runs.items()},
            "paired_minus_median": {key: {"mean": statistics.mean(values), "se": standard_error(values)}
                                    for key, values in differences.items()}}


def markdown(report: dict) -> list[str]:
    lines = [f"The tiny `football_lr_sweep` ({report['trials']} trials, {report['scenes']} scenes, frozen encoder, "
             f"cached features) with each pruner (paired: alpha {report['alpha']:g}); the chosen trial's CIDEr on "
             "validation and on the test split:", "",
             "| pruner | seed | best val CIDEr | its test CIDEr | wall time | epochs trained | pruned of trials |",
             "|---|---|---|---|---|---|---|"]
    for pruner, r in report["pruners"].items():
        lines.append(f"| {pruner} | mean of {len(r['seeds'])} | {_mean(r, 'best', 3)} | {_mean(r, 'test', 3)} | "
                     f"{_mean(r, 'seconds', 0)} s | {_mean(r, 'epochs', 1)} | |")
        lines += [f"|  | {s['seed']} | {s['best']:.3f} | {s['test']:.3f} | {s['seconds']:.0f} s | {s['epochs']} | "
                  f"{s['pruned']} of {s['trials']} |" for s in r["seeds"]]
    d = report["paired_minus_median"]
    shown = ", ".join(f"{label} {_signed(d[key])}" for key, label in (
        ("best", "best val CIDEr"), ("test", "its test CIDEr"), ("epochs", "epochs trained"), ("seconds", "seconds")))
    return lines + ["", f"Paired minus median, seed by seed (mean ± standard error): {shown}."]


def _mean(result: dict, key: str, digits: int) -> str:
    se = result.get(f"{key}_se")
    return f"{result[key]:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def _signed(difference: dict) -> str:
    se = difference["se"]
    return f"{difference['mean']:+.3g}" + (f" ± {se:.2g}" if se is not None else "")
