"""A comparison logged as a run in B's experiment (compare, and promote's judge): both models as tags, every metric
of each with B - A as metrics, the verdict, and the side-by-side table (scoring/side_by_side.py) with the pictures;
refused in one line when this account may not log runs there."""
from __future__ import annotations

import sys
from pathlib import Path

from ..model import generation
from ..scoring.assess import Comparison, Target
from ..scoring.evaluation import pictures
from ..scoring.side_by_side import columns, table_name
from .access import run_refusal
from .runs import new_run
from .store import current_uri, use_experiment

ROLE = "comparison"  # the run's blipexp.role


def log_if_allowed(comparison: Comparison, b: Target, home: Path, alpha: float, kept: str = "") -> str | None:
    """log_comparison's run id; None when this account may not log runs to B's experiment (a viewer on a secured
    server), which one line on stderr says (ending with `kept`: where the table is kept instead)."""
    refused = run_refusal(current_uri(), b.spec.experiment_name, "the comparison")
    if refused:
        print(f"note: {refused}{kept}", file=sys.stderr)
        return None
    return log_comparison(comparison, b, home, alpha)


def log_comparison(comparison: Comparison, b: Target, home: Path, alpha: float) -> str:
    """A run in B's experiment holding the comparison: both models as tags, every metric of each with B - A (and
    its interval and p where tested) as metrics, the verdict, and the side-by-side table. Returns its id."""
    rows = columns(comparison)
    use_experiment(b.spec.experiment_name, home)
    split = comparison.a.scores.split
    tags = {"blipexp.role": ROLE, "compared_a": comparison.a.label, "compared_b": comparison.b.label,
            "evaluated_model": comparison.b.label, "data_fingerprint": comparison.a.fingerprint,
            "profile": b.spec.profile, "compare_verdict": comparison.verdict(alpha)[:4000],
            **({"evaluated_version": f"{b.version.name}/{b.version.version}"} if b.version else {})}
    metrics = {}
    for key, difference in comparison.differences.items():
        found = {"a": difference.a, "b": difference.b, "difference": difference.difference,
                 "difference_ci_low": difference.ci_low, "difference_ci_high": difference.ci_high,
                 "p_value": difference.p_value}
        metrics.update({f"{split}_{key}_{name}": value for name, value in found.items() if value is not None})
    with new_run(f"compare-{split}", tags=tags) as run:
        run.params({"split": split, "images": comparison.images, "verdict_metric": comparison.metric,
                    "alpha": alpha, "bootstrap_resamples": comparison.resamples, **generation.settings(b.spec)})
        run.metrics(metrics)
        images = pictures(comparison.a.data, rows["key"])
        run.table({"key": rows["key"], "image": images, **{k: v for k, v in rows.items() if k != "key"}},
                  table_name(comparison))
    return run.id
