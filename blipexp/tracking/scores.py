"""A run's final scores as its metrics and tags hold them (`LoggedScores`): what a summary, a registered version's
tags and its model card read back from the store."""
from __future__ import annotations

from dataclasses import dataclass

from ..scoring import evidence
from ..scoring.evaluation import format_scores

FINAL_PREFIXES = {"validation": "best_val_", "test": "test_"}  # a trial's final metrics, by split
CI_SUFFIXES = ("_ci_low", "_ci_high")


@dataclass(frozen=True)
class LoggedScores:
    """A run's final scores of one split as its metrics and tags hold them: values, 95% intervals, signature."""

    split: str
    metrics: dict[str, float]
    intervals: dict[str, evidence.Interval]
    signature: str

    @classmethod
    def of(cls, run, split: str) -> "LoggedScores":
        """From a run read from the store (`tracking.Run.read()`)."""
        prefix, logged = FINAL_PREFIXES[split], run.data.metrics
        values = {k[len(prefix):]: v for k, v in logged.items()
                  if k.startswith(prefix) and not k.endswith(CI_SUFFIXES) and not k.startswith("best_val_subset_")}
        intervals = {key: evidence.Interval(logged[f"{prefix}{key}_ci_low"], logged[f"{prefix}{key}_ci_high"])
                     for key in values if f"{prefix}{key}_ci_low" in logged}
        return cls(split, values, intervals, run.data.tags.get(f"{prefix}signature", ""))

    def line(self) -> str:
        """'cider 4.6500 [3.92, 5.40]  bleu4 ...': each metric with its interval where it has one."""
        return format_scores(self.metrics, self.intervals)
