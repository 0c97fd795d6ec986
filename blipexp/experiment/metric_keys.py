"""The caption metrics by name, as a spec and the console know them: what each measures, its place in the
per-epoch console line, and which objectives a spec may select and in which direction. Computing them is
blipexp.scoring.metrics's job; this table stays free of its imports (evaluate, torch), so a spec loads fast."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CaptionMetric:
    """One key of `caption_scores`: logged as val_<key> each epoch, selectable as a spec's objective_metric."""

    description: str  # what it measures and its range
    console: int = 0  # its place in the per-epoch console line after the loss (1 = first); 0: not shown


# The caption metrics, in the order they are returned and listed. The local evaluate module computes each key.
METRICS: dict[str, CaptionMetric] = {
    "bleu1": CaptionMetric("BLEU-1: corpus unigram precision with brevity penalty, 0..1"),
    "bleu2": CaptionMetric("BLEU-2: corpus BLEU up to bigrams, 0..1"),
    "bleu3": CaptionMetric("BLEU-3: corpus BLEU up to trigrams, 0..1"),
    "bleu4": CaptionMetric("BLEU-4: corpus BLEU up to 4-grams, 0..1", console=2),
    "rougeL": CaptionMetric("ROUGE-L: longest common subsequence F-measure with the best reference, "
                            "mean over images, 0..1", console=3),
    "cider": CaptionMetric("CIDEr-D with the idf of a reference corpus when one is given, else cider_coco; "
                           "0..10", console=1),
    "cider_coco": CaptionMetric("CIDEr-D as pycocoevalcap computes it: idf from the scored set (0 on one image); "
                                "0..10"),
}
METRIC_KEYS = tuple(METRICS)
# The per-epoch console line: the validation loss (the Trainer's, not a caption metric), then the shown metrics.
CONSOLE_KEYS = ("loss", *sorted((key for key, metric in METRICS.items() if metric.console),
                                key=lambda key: METRICS[key].console))
# What a spec may select as objective_metric: a caption metric or the validation loss.
OBJECTIVES = METRIC_KEYS + ("loss",)
LOWER_IS_BETTER = frozenset({"loss"})  # objectives where smaller wins; every caption metric is higher-is-better
