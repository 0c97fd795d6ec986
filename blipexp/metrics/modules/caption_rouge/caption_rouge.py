"""Local `evaluate` module: ROUGE-L of captions, computed by pycocoevalcap's Rouge scorer.

Expects already-normalised captions (see `blipexp.metrics.normalize_caption`): pycocoevalcap splits on
single spaces, so a double space would become an empty token. Loaded by folder path, never from the Hub.
"""
import datasets
import evaluate
from pycocoevalcap.rouge.rouge import Rouge

_DESCRIPTION = """Mean over images of ROUGE-L (LCS F-measure, beta 1.2, best reference), COCO caption evaluation."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of str, one normalised caption per image.
    references: list of list of str, the normalised reference captions of each image (at least one).
Returns:
    dict with the float value 'rougeL' in [0, 1].
"""

_CITATION = """Lin, ROUGE: A Package for Automatic Evaluation of Summaries, ACL Workshop 2004."""


class CaptionRouge(evaluate.Metric):
    """ROUGE-L over a set of images, each with one prediction and several references."""

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
        score, _ = Rouge().compute_score(gts, res)
        return {"rougeL": float(score)}
