"""Local `evaluate` module: corpus BLEU-1..4 of captions, computed by pycocoevalcap's Bleu scorer.

Expects already-normalised captions (see `blipexp.metrics.normalize_caption`): pycocoevalcap splits on
whitespace and counts every token, punctuation included. Loaded by folder path, never from the Hub.
"""
import datasets
import evaluate
from pycocoevalcap.bleu.bleu import Bleu

_DESCRIPTION = """Corpus-level BLEU-1..4 as in the COCO caption evaluation (pycocoevalcap Bleu(4), option 'closest')."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of str, one normalised caption per image.
    references: list of list of str, the normalised reference captions of each image (at least one).
Returns:
    dict with float values 'bleu1', 'bleu2', 'bleu3', 'bleu4' in [0, 1].
"""

_CITATION = """Papineni et al., BLEU: a Method for Automatic Evaluation of Machine Translation, ACL 2002."""


class CaptionBleu(evaluate.Metric):
    """BLEU-1..4 over a set of images, each with one prediction and several references."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
        # pycocoevalcap wants {image id: [caption, ...]}; the list position serves as id.
        gts = {i: list(refs) for i, refs in enumerate(references)}
        res = {i: [pred] for i, pred in enumerate(predictions)}
        # verbose=0: the default (1) prints the n-gram counts and length ratio to stdout.
        scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
        return {f"bleu{n}": float(score) for n, score in enumerate(scores, start=1)}
