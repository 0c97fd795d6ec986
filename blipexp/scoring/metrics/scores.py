"""Caption metrics: BLEU-1..4, ROUGE-L and CIDEr-D as in the COCO caption evaluation, fully offline.

`METRICS` (experiment/metric_keys.py) is the one list of caption metrics: the keys `caption_scores` returns, the
objectives a spec may select, the val_<key> metrics logged each epoch and the console's line all derive from it.
Adding a metric: its scorer in the local `evaluate` module and its row in METRICS.

`caption_scores` normalises captions with `normalize_caption` (a pure-Python stand-in for pycocoevalcap's
PTBTokenizer, which needs Java) and scores them with a local `evaluate` module (`modules/caption_metrics/`, loaded by
absolute path so `evaluate` never asks the Hub) wrapping pycocoevalcap's pure-Python scorers.

`score_images` also returns each image's share (`ImageScores`): per-image ROUGE-L and CIDEr (the corpus values are
their means) and BLEU's sufficient statistics, from which `ImageScores.corpus` recomputes any weighted set's corpus
metrics at once: what bootstrap intervals and paired tests (blipexp.scoring.evidence) resample.

CIDEr's idf over the scored set is degenerate on a few images (one image: every idf is 0):
`corpus_document_frequency` counts it over a larger reference corpus (training + validation references, as
self-critical training code does); `resolve_cider_df` picks which one a set of a given size uses.
"""
from __future__ import annotations

import functools
import types
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...experiment.metric_keys import METRIC_KEYS, METRICS

if TYPE_CHECKING:
    import evaluate
    import numpy as np

__all__ = [
    "CIDER_DF_AUTO_MIN_IMAGES", "CIDER_DF_SETTINGS", "DocumentFrequency", "ImageScores", "caption_scores",
    "corpus_document_frequency", "normalize_caption", "resolve_cider_df", "score_images"
]


CIDER_DF_SETTINGS = ("auto", "split", "corpus")
# "auto" scores sets smaller than this with corpus df: below it a split's own idf ranks models worse (docs/data.md)
CIDER_DF_AUTO_MIN_IMAGES = 50

_MODULE_DIR = Path(__file__).resolve().parent / "modules" / "caption_metrics"
_BLEU_ORDERS = 4
# BLEU's sufficient statistics per image, in the module's order (its BLEU_STATS): matches and totals per n-gram
# order, then the hypothesis and the closest reference length
_BLEU_WIDTH = 2 * _BLEU_ORDERS + 2
# pycocoevalcap's guards in BLEU's ratios: a zero match count still gives 0, a zero total no division by zero
_TINY, _SMALL = 1e-15, 1e-9

# Apostrophe-like characters; inside a word they are dropped ("dog's" -> "dogs", "don't" -> "dont")
# so a contraction stays one token on both sides. U+02BC is a letter by category, hence listed here.
_APOSTROPHES = frozenset("'\u2019\u2018\u02bc`")


def _is_word_char(ch: str) -> bool:
    """Letters, digits and combining marks (needed by scripts such as Devanagari) in any script."""
    return unicodedata.category(ch)[0] in "LNM"


def normalize_caption(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace: "A Dog's ball!" -> "a dogs ball".

    NFKC first folds compatibility forms (full-width letters, ligatures) into plain ones, and
    casefold is a Unicode-aware lowercase. Apostrophes between two word characters are removed;
    every other character that is not a letter, digit or mark becomes a space, so "black-and-white"
    gives "black and white" and "3.5" gives "3 5".
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = []
    for i, ch in enumerate(text):
        if ch in _APOSTROPHES:
            inside_word = 0 < i < len(text) - 1 and _is_word_char(text[i - 1]) and _is_word_char(text[i + 1])
            kept.append("" if inside_word else " ")
        else:
            kept.append(ch if _is_word_char(ch) else " ")
    return " ".join("".join(kept).split())


@functools.lru_cache(maxsize=None)
def _load_module() -> evaluate.EvaluationModule:
    """Load the local module once per process.

    `evaluate` is imported here, not at the top: it imports transformers and torch (seconds), which
    `normalize_caption` users should not pay for. keep_in_memory avoids the Arrow cache files (and
    their locks) that evaluate otherwise writes under HF_METRICS_CACHE at each compute.
    """
    import evaluate

    return evaluate.load(str(_MODULE_DIR), keep_in_memory=True)


def _normalize_inputs(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[list[str], list[list[str]]]:
    """Validate and normalise; references that normalise to "" are dropped (they match nothing)."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be lists, not a single string")
    if len(predictions) == 0 or len(references) == 0:
        raise ValueError(
            f"nothing to score: got {len(predictions)} predictions and {len(references)} reference lists"
        )
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} reference lists; "
            "expected one list of references per prediction"
        )
    norm_preds = []
    for i, pred in enumerate(predictions):
        if not isinstance(pred, str):
            raise TypeError(f"prediction {i} is {type(pred).__name__}, expected str")
        # An empty prediction stays "": pycocoevalcap scores it 0 without crashing (see caption_scores).
        norm_preds.append(normalize_caption(pred))
    return norm_preds, _normalize_references(references)


def _normalize_references(references: Sequence[Sequence[str]]) -> list[list[str]]:
    """Validate and normalise each image's references; those that normalise to "" are dropped."""
    norm_refs = []
    for i, refs in enumerate(references):
        if isinstance(refs, str):
            raise TypeError(f"references[{i}] is a str; expected a list of reference captions, e.g. [{refs!r}]")
        if any(not isinstance(ref, str) for ref in refs):
            raise TypeError(f"references[{i}] holds a non-str caption: {refs!r}")
        kept = [norm for norm in (normalize_caption(ref) for ref in refs) if norm]
        if not kept:
            raise ValueError(f"image {i} has no reference caption (none left non-empty after normalisation): {refs!r}")
        norm_refs.append(kept)
    return norm_refs


@dataclass(frozen=True)
class DocumentFrequency:
    """CIDEr's n-gram document frequencies over a reference corpus, one document per image.

    Build it with `corpus_document_frequency`; pass it to `caption_scores` to weigh n-grams by this
    corpus instead of by the scored set.
    """

    counts: Mapping[tuple[str, ...], int]  # n-gram (1..4 words) -> corpus images whose references hold it
    num_images: int  # images in the corpus; its log is pycocoevalcap's ref_len


def corpus_document_frequency(references: Sequence[Sequence[str]]) -> DocumentFrequency:
    """Count n-gram document frequencies over a corpus given as one list of reference captions per image.

    Captions are normalised like the scored ones. An image counts once per n-gram however many of its
    references hold it, as pycocoevalcap's CiderScorer.compute_doc_freq counts. Use the references the
    model may see (training + validation), so that a small scored split gets meaningful idf weights.
    """
    # Imported here, like evaluate: normalize_caption users should not pay for pycocoevalcap and numpy.
    from pycocoevalcap.cider.cider_scorer import precook

    if isinstance(references, str):
        raise TypeError("references must be a list of reference-caption lists, one per image, not a single string")
    if len(references) == 0:
        raise ValueError("the reference corpus is empty; pass one list of reference captions per image")
    counts: dict[tuple[str, ...], int] = {}
    for refs in _normalize_references(references):
        for ngram in {ngram for ref in refs for ngram in precook(ref, 4)}:
            counts[ngram] = counts.get(ngram, 0) + 1
    return DocumentFrequency(counts=types.MappingProxyType(counts), num_images=len(references))


def resolve_cider_df(setting: str, n_scored_images: int) -> str:
    """Where CIDEr's document frequencies come from for a scored set: "split" (itself) or "corpus".

    "auto" takes the corpus below CIDER_DF_AUTO_MIN_IMAGES images, where the split's own idf are
    degenerate (always 0 on one image) or rank models unreliably.
    """
    if setting not in CIDER_DF_SETTINGS:
        raise ValueError(f"cider_df={setting!r} is not a setting; use one of {', '.join(CIDER_DF_SETTINGS)}")
    if n_scored_images < 1:
        raise ValueError(f"n_scored_images={n_scored_images}: a scored set needs at least 1 image")
    if setting == "auto":
        return "corpus" if n_scored_images < CIDER_DF_AUTO_MIN_IMAGES else "split"
    return setting


def caption_scores(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    document_frequency: DocumentFrequency | None = None,
) -> dict[str, float]:
    """Score one predicted caption per image against that image's reference captions.

    Returns plain floats under METRIC_KEYS: bleu1..bleu4 and rougeL in [0, 1], cider and cider_coco on
    pycocoevalcap's 0-10 scale. Both sides go through `normalize_caption`. An empty or blank
    prediction is scored as a caption of zero words: it matches nothing, counts as length 0 in BLEU's
    brevity penalty and gets 0 ROUGE-L and CIDEr. Raises ValueError for empty input, mismatched
    lengths, or an image without a non-empty reference.

    cider_coco is pycocoevalcap's CIDEr-D: its idf comes from the scored set itself, so one image
    always gives 0. cider equals it when document_frequency is None; otherwise it is CIDEr-D with the
    idf of that corpus (see `corpus_document_frequency`), which ranks predictions even on one image.
    """
    norm_preds, norm_refs = _normalize_inputs(predictions, references)
    corpus = {}
    if document_frequency is not None:
        corpus = {"document_frequency": document_frequency.counts, "corpus_images": document_frequency.num_images}
    scores = _load_module().compute(predictions=norm_preds, references=norm_refs, **corpus)
    assert set(scores) == set(METRICS), f"the evaluate module returns {sorted(scores)}, METRICS lists {METRIC_KEYS}"
    return {key: float(scores[key]) for key in METRIC_KEYS}


@dataclass(frozen=True)
class ImageScores:
    """Each scored image's share of the caption metrics, in the order the images were scored.

    `means`: per metric whose corpus value is the mean over images (ROUGE-L, CIDEr, cider_coco), one value per
    image. `bleu_stats`: one row of BLEU statistics per image; corpus BLEU-n is computed from their sums, exactly as
    pycocoevalcap computes it. A CIDEr value keeps the idf it was scored with (the scored set's own for cider_coco).
    """

    means: Mapping[str, np.ndarray]  # metric key -> (n,) floats
    bleu_stats: np.ndarray  # (n, 10): the module's BLEU_STATS

    def __len__(self) -> int:
        return len(self.bleu_stats)

    def corpus(self, weights: np.ndarray | None = None, keys: Sequence[str] = METRIC_KEYS) -> dict:
        """The corpus metrics `keys` (all by default) of weighted sets of these images: `weights` (R, n), each row how
        often each image counts (a bootstrap resample's counts), gives each metric's R values as an array; None gives
        this set's own metrics as floats, equal to caption_scores'."""
        import numpy as np

        single = weights is None
        weights = np.ones((1, len(self))) if single else np.asarray(weights, dtype=float)
        counts = weights.sum(axis=1)
        values = {}
        if any(key.startswith("bleu") for key in keys):
            values = {f"bleu{n}": column for n, column in enumerate(bleu_from_totals(weights @ self.bleu_stats).T, 1)}
        values.update({key: weights @ self.means[key] / counts for key in keys if key in self.means})
        values = {key: values[key] for key in keys}
        return {key: float(value[0]) for key, value in values.items()} if single else values

    def rows(self) -> dict[str, list]:
        """Per-image columns for a table: each mean metric, the image's own BLEU-4 (pycocoevalcap's sentence-level
        value), and its BLEU statistics (`bleu_stats`, to recompute corpus BLEU)."""
        return {**{key: column.tolist() for key, column in self.means.items()}, "bleu4": self.of_each("bleu4").tolist(),
                "bleu_stats": self.bleu_stats.astype(int).tolist()}

    def of_each(self, metric: str) -> np.ndarray:
        """Each image's own value of `metric` (a METRIC_KEYS key): its share of a mean metric, or its sentence-level
        BLEU-n."""
        if metric in self.means:
            return self.means[metric]
        return bleu_from_totals(self.bleu_stats)[:, int(metric.removeprefix("bleu")) - 1]

    @classmethod
    def from_rows(cls, rows: Mapping[str, Sequence]) -> "ImageScores":
        """The scores `rows` wrote (e.g. a per-image table read back)."""
        import numpy as np

        means = {key: np.asarray(rows[key], dtype=float) for key in METRIC_KEYS if not key.startswith("bleu")}
        return cls(means=means, bleu_stats=np.asarray(rows["bleu_stats"], dtype=float).reshape(-1, _BLEU_WIDTH))

    def column(self, key: str) -> np.ndarray:
        """Per image, what metric `key`'s corpus value is computed from: its own values, or BLEU's statistics."""
        return self.bleu_stats if key.startswith("bleu") else self.means[key]

    @classmethod
    def of_column(cls, key: str, values: Sequence) -> "ImageScores":
        """Scores holding `column(key)` alone, every other metric's zero: `key`'s corpus value and paired tests come
        out as from the whole scores (a sweep's pruner stores this much, not all of it)."""
        import numpy as np

        values = np.asarray(values, dtype=float)
        images = len(values)
        bleu = values.reshape(-1, _BLEU_WIDTH) if key.startswith("bleu") else np.zeros((images, _BLEU_WIDTH))
        means = {k: values if k == key else np.zeros(images) for k in METRIC_KEYS if not k.startswith("bleu")}
        return cls(means=means, bleu_stats=bleu)

    def subset(self, indices: Sequence[int]) -> "ImageScores":
        import numpy as np

        chosen = np.asarray(indices, dtype=int)
        return ImageScores({key: column[chosen] for key, column in self.means.items()}, self.bleu_stats[chosen])


def bleu_from_totals(totals: np.ndarray) -> np.ndarray:
    """BLEU-1..4 from rows of BLEU statistics (R, 10), each row a set's summed statistics: (R, 4), computed as
    pycocoevalcap's BleuScorer computes its corpus score (the same guards, cumulative product and brevity
    penalty)."""
    import numpy as np

    totals = np.asarray(totals, dtype=float)
    correct, guess = totals[:, :_BLEU_ORDERS], totals[:, _BLEU_ORDERS:2 * _BLEU_ORDERS]
    hypothesis, reference = totals[:, 2 * _BLEU_ORDERS], totals[:, 2 * _BLEU_ORDERS + 1]
    bleu = np.cumprod((correct + _TINY) / (guess + _SMALL), axis=1) ** (1.0 / np.arange(1, _BLEU_ORDERS + 1))
    ratio = (hypothesis + _TINY) / (reference + _SMALL)
    penalty = np.exp(1 - 1 / np.minimum(ratio, 1.0))  # 1 when the hypotheses are not shorter
    return bleu * penalty[:, None]


def score_images(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    document_frequency: DocumentFrequency | None = None,
) -> tuple[dict[str, float], ImageScores]:
    """caption_scores, and each image's share of them (`ImageScores`), from the same scorer calls."""
    import numpy as np

    norm_preds, norm_refs = _normalize_inputs(predictions, references)
    corpus = {}
    if document_frequency is not None:
        corpus = {"document_frequency": document_frequency.counts, "corpus_images": document_frequency.num_images}
    scores = _load_module().compute(predictions=norm_preds, references=norm_refs, per_image=True, **corpus)
    each = scores.pop("per_image")
    assert set(scores) == set(METRICS), f"the evaluate module returns {sorted(scores)}, METRICS lists {METRIC_KEYS}"
    images = ImageScores(means={key: np.asarray(each[key], dtype=float) for key in METRIC_KEYS if key in each},
                         bleu_stats=np.asarray(each["bleu_stats"], dtype=float).reshape(-1, _BLEU_WIDTH))
    assert set(images.means) | {f"bleu{n}" for n in range(1, _BLEU_ORDERS + 1)} == set(METRICS), \
        "every metric is a per-image mean or a BLEU order"
    return {key: float(scores[key]) for key in METRIC_KEYS}, images
