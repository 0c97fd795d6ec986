"""Local `evaluate` module: CIDEr-D of captions, computed by pycocoevalcap's Cider scorer.

Expects already-normalised captions (see `blipexp.metrics.normalize_caption`). The scale is
pycocoevalcap's (0 to 10, typically below 1.5 for real models). The idf weights come from the
references of the scored set itself, so a set of one image always scores 0 and small sets are noisy.
Loaded by folder path, never from the Hub.
"""
import datasets
import evaluate
from pycocoevalcap.cider.cider import Cider

_DESCRIPTION = """CIDEr-D (n-grams 1..4, sigma 6, tf-idf from the scored set's references), COCO caption evaluation."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of str, one normalised caption per image.
    references: list of list of str, the normalised, non-empty reference captions of each image.
Returns:
    dict with the float value 'cider' in [0, 10].
"""

_CITATION = """Vedantam et al., CIDEr: Consensus-based Image Description Evaluation, CVPR 2015."""


class CaptionCider(evaluate.Metric):
    """CIDEr-D over a set of images, each with one prediction and several references."""

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
        score, _ = Cider().compute_score(gts, res)
        return {"cider": float(score)}
