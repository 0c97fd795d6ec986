"""Caption metrics: BLEU-1..4, ROUGE-L and CIDEr-D as in the COCO caption evaluation, fully offline.

`caption_scores` normalises predictions and references with `normalize_caption` (a pure-Python
stand-in for pycocoevalcap's PTBTokenizer, which needs Java) and scores them with three local
`evaluate` modules (folders under `modules/`) that wrap pycocoevalcap's pure-Python scorers.
The modules are loaded by absolute path, so `evaluate` never asks the Hub for them.
"""
from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import evaluate

__all__ = ["METRIC_KEYS", "caption_scores", "normalize_caption"]

METRIC_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "cider")

_MODULES_DIR = Path(__file__).resolve().parent / "modules"
_MODULE_NAMES = ("caption_bleu", "caption_rouge", "caption_cider")

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
def _load_module(name: str) -> evaluate.EvaluationModule:
    """Load one local module once per process.

    `evaluate` is imported here, not at the top: it imports transformers and torch (seconds), which
    `normalize_caption` users should not pay for. keep_in_memory avoids the Arrow cache files (and
    their locks) that evaluate otherwise writes under HF_METRICS_CACHE at each compute.
    """
    import evaluate

    return evaluate.load(str(_MODULES_DIR / name), keep_in_memory=True)


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
    norm_refs = []
    for i, (pred, refs) in enumerate(zip(predictions, references)):
        if not isinstance(pred, str):
            raise TypeError(f"prediction {i} is {type(pred).__name__}, expected str")
        if isinstance(refs, str):
            raise TypeError(f"references[{i}] is a str; expected a list of reference captions, e.g. [{refs!r}]")
        if any(not isinstance(ref, str) for ref in refs):
            raise TypeError(f"references[{i}] holds a non-str caption: {refs!r}")
        kept = [norm for norm in (normalize_caption(ref) for ref in refs) if norm]
        if not kept:
            raise ValueError(f"image {i} has no reference caption (none left non-empty after normalisation): {refs!r}")
        # An empty prediction stays "": pycocoevalcap scores it 0 without crashing (see caption_scores).
        norm_preds.append(normalize_caption(pred))
        norm_refs.append(kept)
    return norm_preds, norm_refs


def caption_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Score one predicted caption per image against that image's reference captions.

    Returns plain floats under METRIC_KEYS: bleu1..bleu4 and rougeL in [0, 1], cider on
    pycocoevalcap's 0-10 scale. Both sides go through `normalize_caption`. An empty or blank
    prediction is scored as a caption of zero words: it matches nothing, counts as length 0 in BLEU's
    brevity penalty and gets 0 ROUGE-L and CIDEr. Raises ValueError for empty input, mismatched
    lengths, or an image without a non-empty reference.

    CIDEr's idf comes from the scored set itself: one image always gives cider 0.
    """
    norm_preds, norm_refs = _normalize_inputs(predictions, references)
    scores: dict[str, float] = {}
    for name in _MODULE_NAMES:
        scores.update(_load_module(name).compute(predictions=norm_preds, references=norm_refs))
    return {key: float(scores[key]) for key in METRIC_KEYS}
