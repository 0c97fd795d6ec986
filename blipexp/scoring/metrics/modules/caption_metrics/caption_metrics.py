"""Local `evaluate` module: the COCO caption metrics BLEU-1..4, ROUGE-L and CIDEr-D, by pycocoevalcap's scorers.

Expects already-normalised captions (see `blipexp.scoring.metrics.normalize_caption`): pycocoevalcap splits on
whitespace and counts every token, punctuation included (ROUGE-L splits on single spaces, so a double space
would become an empty token). Loaded by folder path, never from the Hub.

CIDEr's scale is pycocoevalcap's (0 to 10, typically below 1.5 for real models). pycocoevalcap takes the idf
weights from the references of the scored set itself, so a set of one image always scores 0 and small sets
are noisy; given `document_frequency` and `corpus_images` (counted over a larger reference corpus, as
self-critical training code does), 'cider' uses those instead and 'cider_coco' keeps pycocoevalcap's value.

With `per_image=True` the result also holds each image's share of the scores under 'per_image': its ROUGE-L and
CIDEr values (the corpus values are their means) and BLEU's sufficient statistics (clipped n-gram matches and
totals for n = 1..4, hypothesis length, closest reference length), from which corpus BLEU is the summed
statistics' value. They come from the same scorer calls as the corpus values: nothing is scored twice.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import datasets
import evaluate
from pycocoevalcap.bleu.bleu_scorer import BleuScorer
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import precook
from pycocoevalcap.rouge.rouge import Rouge

_DESCRIPTION = """BLEU-1..4 (option 'closest'), ROUGE-L (beta 1.2, best reference) and CIDEr-D (n-grams 1..4,
sigma 6) as in the COCO caption evaluation; CIDEr's tf-idf from the scored set or from a given corpus."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of str, one normalised caption per image.
    references: list of list of str, the normalised, non-empty reference captions of each image.
    document_frequency: optional mapping n-gram tuple -> number of corpus images whose references hold it.
    corpus_images: the number of images of that corpus; required with document_frequency.
    per_image: also return each image's scores (see the module docstring).
Returns:
    dict of floats: 'bleu1'..'bleu4' and 'rougeL' in [0, 1]; in [0, 10] 'cider_coco', pycocoevalcap's CIDEr-D
    (idf from the scored set), and 'cider', CIDEr-D with the corpus idf when document_frequency is given, else
    equal to 'cider_coco'; with per_image, 'per_image': {'rougeL', 'cider', 'cider_coco': one float per image,
    'bleu_stats': one list of BLEU_STATS ints per image}.
"""

_CITATION = """Papineni et al., BLEU: a Method for Automatic Evaluation of Machine Translation, ACL 2002.
Lin, ROUGE: A Package for Automatic Evaluation of Summaries, ACL Workshop 2004.
Vedantam et al., CIDEr: Consensus-based Image Description Evaluation, CVPR 2015."""

_N = 4  # CIDEr's n-gram orders 1..4, as pycocoevalcap's Cider
_SIGMA = 6.0  # width of CIDEr-D's Gaussian length penalty, as pycocoevalcap's Cider

Captions = dict[int, list[str]]  # pycocoevalcap's input: {image id: [caption, ...]}
Scored = tuple[dict[str, float], dict[str, list]]  # (corpus scores, per-image scores) of one scorer
# BLEU's sufficient statistics of one image, in this order: clipped matches and totals per n-gram order, the
# hypothesis length and the closest reference length ("closest", as pycocoevalcap's Bleu)
BLEU_STATS = ("correct1", "correct2", "correct3", "correct4", "guess1", "guess2", "guess3", "guess4",
              "hyp_len", "ref_len")


def _bleu(gts: Captions, res: Captions) -> Scored:
    # pycocoevalcap's Bleu(4).compute_score, with its scorer kept: its cooked tests are each image's statistics.
    # verbose=0: the default (1) prints the n-gram counts and length ratio to stdout.
    scorer = BleuScorer(n=4)
    for image in gts:
        scorer += (res[image][0], gts[image])
    scores, _ = scorer.compute_score(option="closest", verbose=0)
    stats = [[*cooked["correct"], *cooked["guess"], cooked["testlen"], _closest(cooked["reflen"], cooked["testlen"])]
             for cooked in scorer.ctest]
    return {f"bleu{n}": float(score) for n, score in enumerate(scores, start=1)}, {"bleu_stats": stats}


def _closest(reference_lengths: list[int], hypothesis_length: int) -> int:
    """The reference length BLEU's brevity penalty uses: the closest, the shorter on a tie (as pycocoevalcap)."""
    return min((abs(length - hypothesis_length), length) for length in reference_lengths)[1]


def _rouge(gts: Captions, res: Captions) -> Scored:
    score, per_image = Rouge().compute_score(gts, res)
    return {"rougeL": float(score)}, {"rougeL": [float(x) for x in per_image]}


def _cider(gts: Captions, res: Captions) -> Scored:
    score, per_image = Cider(n=_N, sigma=_SIGMA).compute_score(gts, res)
    values = [float(x) for x in per_image]
    return {"cider": float(score), "cider_coco": float(score)}, {"cider": values, "cider_coco": list(values)}


# Every key of blipexp.experiment.metric_keys.METRICS comes from one of these: each scores the whole set and returns
# its keys, and each image's share of them (a per-image value whose mean is the corpus value, or sufficient statistics).
SCORERS = (_bleu, _rouge, _cider)


class CaptionMetrics(evaluate.Metric):
    """The caption metrics over a set of images, each with one prediction and several references."""

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

    def _compute(
        self,
        predictions: list[str],
        references: list[list[str]],
        document_frequency: Mapping[tuple[str, ...], int] | None = None,
        corpus_images: int | None = None,
        per_image: bool = False,
    ) -> dict:
        if (document_frequency is None) != (corpus_images is None):
            raise ValueError("pass document_frequency and corpus_images together, or neither")
        # pycocoevalcap wants {image id: [caption, ...]}; the list position serves as id.
        gts = {i: list(refs) for i, refs in enumerate(references)}
        res = {i: [pred] for i, pred in enumerate(predictions)}
        scores: dict = {}
        images: dict[str, list] = {}
        for scorer in SCORERS:
            corpus, each = scorer(gts, res)
            scores.update(corpus)
            images.update(each)
        if document_frequency is not None:
            log_n = math.log(corpus_images)
            images["cider"] = [_image_cider(pred, refs, document_frequency, log_n)
                               for pred, refs in zip(predictions, references)]
            scores["cider"] = sum(images["cider"]) / len(images["cider"])
        if per_image:
            scores["per_image"] = images
        return scores


def _image_cider(prediction: str, references: list[str], df: Mapping[tuple[str, ...], int], log_n: float) -> float:
    """CIDEr-D of one image: 10 x the mean over references and n-gram orders of the clipped, length-penalised cosine."""
    hyp = _tfidf(prediction, df, log_n)
    total = sum(_similarity(hyp, _tfidf(ref, df, log_n)) for ref in references)
    return 10.0 * total / len(references)


def _tfidf(caption: str, df: Mapping[tuple[str, ...], int], log_n: float) -> tuple[list[dict], list[float], int]:
    """Per n-gram order: the tf-idf vector, its norm; and the caption length as CIDEr-D's penalty counts it."""
    vectors: list[dict[tuple[str, ...], float]] = [{} for _ in range(_N)]
    squares = [0.0] * _N
    length = 0
    for ngram, tf in precook(caption, _N).items():
        order = len(ngram) - 1
        # An n-gram absent from the corpus counts as seen once: the highest idf, log(N), as in pycocoevalcap.
        weight = tf * (log_n - math.log(max(1.0, df.get(ngram, 0))))
        vectors[order][ngram] = weight
        squares[order] += weight * weight
        if order == 1:  # pycocoevalcap counts bigrams as the length; kept so both variants penalise alike
            length += tf
    return vectors, [math.sqrt(s) for s in squares], length


def _similarity(hyp: tuple[list[dict], list[float], int], ref: tuple[list[dict], list[float], int]) -> float:
    """Mean over n-gram orders of the cosine with hypothesis weights clipped at the reference's (the "-D" of CIDEr-D)."""
    (hyp_vecs, hyp_norms, hyp_len), (ref_vecs, ref_norms, ref_len) = hyp, ref
    penalty = math.exp(-((hyp_len - ref_len) ** 2) / (2 * _SIGMA**2))
    total = 0.0
    for order in range(_N):
        ref_vec = ref_vecs[order]
        dot = sum(min(w, ref_vec.get(g, 0.0)) * ref_vec.get(g, 0.0) for g, w in hyp_vecs[order].items())
        if hyp_norms[order] != 0 and ref_norms[order] != 0:
            dot /= hyp_norms[order] * ref_norms[order]
        total += dot * penalty
    return total / _N
