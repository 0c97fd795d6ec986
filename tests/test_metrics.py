"""Tests of blipexp.metrics: equality with pycocoevalcap's scorers, normalisation, validation, offline loading.

Expected scores are never copied from the code under test: they come from pycocoevalcap's scorers run
directly in the test on hand-written, already-normalised captions.
"""
from __future__ import annotations

import json
import random
import socket
import subprocess
import sys

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import CiderScorer
from pycocoevalcap.rouge.rouge import Rouge

from blipexp.experiment.metric_keys import CONSOLE_KEYS, METRIC_KEYS, METRICS
from blipexp.scoring.metrics import (
    CIDER_DF_AUTO_MIN_IMAGES,
    ImageScores,
    caption_scores,
    corpus_document_frequency,
    normalize_caption,
    resolve_cider_df,
    score_images,
)
from blipexp.scoring.metrics import scores as metrics

# Already normalised (lowercase, no punctuation, single spaces): a perfect match, partial matches and a total miss.
PREDICTIONS = [
    "a dog runs across the grass",  # perfect: equals a reference
    "a man riding a horse on a beach",  # partial
    "two players kick a ball",  # partial
    "purple elephant sings opera loudly",  # total miss
]
REFERENCES = [
    ["a dog runs across the grass", "a brown dog running on a lawn", "the dog is playing outside"],
    ["a man rides a brown horse", "a person on horseback near the sea", "a rider and his horse on the sand"],
    ["two football players chase the ball", "players kicking a ball on a field", "a soccer match in progress"],
    ["a cat sleeping on a sofa", "a grey cat curled up on a couch", "the cat naps on the cushions"],
]
# The same captions as a model or annotator might write them: case and punctuation differ.
NOISY_PREDICTIONS = [
    "A dog runs across the grass.",
    "A man, riding a horse on a beach!",
    "Two players kick a ball",
    "Purple elephant sings opera... loudly?",
]
NOISY_REFERENCES = [
    ["A dog runs across the GRASS.", "A brown dog running on a lawn", "The dog is playing outside!"],
    ["A man rides a brown horse.", "A person on horseback, near the sea", "A rider and his horse on the sand."],
    ["Two football players chase the ball", "Players kicking a ball on a field.", "A soccer match, in progress"],
    ["A cat sleeping on a sofa.", "A grey cat curled up on a couch", "The cat naps on the cushions"],
]


def coco_direct(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """pycocoevalcap's scorers run directly, the reference the module must reproduce."""
    gts = {i: refs for i, refs in enumerate(references)}
    res = {i: [pred] for i, pred in enumerate(predictions)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {
        "bleu1": bleu[0], "bleu2": bleu[1], "bleu3": bleu[2], "bleu4": bleu[3], "rougeL": rouge,
        "cider": cider, "cider_coco": cider,  # without corpus df, cider is pycocoevalcap's value too
    }


def assert_scores_equal(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert set(actual) == set(expected)
    for key in expected:
        assert actual[key] == pytest.approx(float(expected[key]), rel=1e-12, abs=1e-15), key


def test_scores_equal_pycocoevalcap_direct() -> None:
    assert_scores_equal(caption_scores(PREDICTIONS, REFERENCES), coco_direct(PREDICTIONS, REFERENCES))


def test_noisy_captions_score_like_their_normalised_form() -> None:
    assert_scores_equal(caption_scores(NOISY_PREDICTIONS, NOISY_REFERENCES), coco_direct(PREDICTIONS, REFERENCES))


def test_keys_types_and_ranges() -> None:
    scores = caption_scores(PREDICTIONS, REFERENCES)
    assert tuple(scores) == METRIC_KEYS
    assert all(type(value) is float for value in scores.values())  # plain floats, e.g. for MLflow and JSON
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL"):
        assert 0.0 <= scores[key] <= 1.0, key
    assert 0.0 <= scores["cider"] <= 10.0
    # The set mixes hits and misses: every score is strictly between the extremes.
    assert 0.0 < scores["bleu1"] < 1.0 and 0.0 < scores["rougeL"] < 1.0 and scores["cider"] > 0.0


def test_metric_keys_match_spec() -> None:
    from blipexp.experiment import metric_keys, spec

    assert METRIC_KEYS == ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "cider", "cider_coco")
    assert spec.OBJECTIVES is metric_keys.OBJECTIVES, "the spec takes the keys from the metrics table, not a copy"
    assert spec.OBJECTIVES == METRIC_KEYS + ("loss",)


def test_the_table_names_every_key_the_module_computes() -> None:
    computed = metrics._load_module().compute(predictions=PREDICTIONS, references=REFERENCES)
    assert set(computed) == set(METRICS)
    assert all(metric.description for metric in METRICS.values())


def test_console_keys_come_from_the_table_in_their_order() -> None:
    assert CONSOLE_KEYS == ("loss", "cider", "bleu4", "rougeL")
    shown = [key for key, metric in METRICS.items() if metric.console]
    assert sorted(shown) == sorted(CONSOLE_KEYS[1:]) and len({METRICS[key].console for key in shown}) == len(shown)


def test_importing_the_table_stays_cheap() -> None:
    # spec imports the table; a CLI's --help must not pay for evaluate, torch or pycocoevalcap (seconds).
    code = ("import sys, blipexp.experiment.spec; "
            "print(sorted({'evaluate', 'torch', 'transformers', 'pycocoevalcap'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A Dog!", "a dog"),
        ("  Two   Cats,\tsleeping.\n", "two cats sleeping"),
        ("The dog's ball", "the dogs ball"),  # in-word apostrophe dropped
        ("don\u2019t", "dont"),  # typographic apostrophe too
        ("'quoted' words", "quoted words"),  # quotes around words are punctuation
        ("black-and-white photo", "black and white photo"),
        ("3.5 goals", "3 5 goals"),
        ("\u00c9COLE Stra\u00dfe", "\u00e9cole strasse"),  # unicode case folding
        ("\uff26\uff55\uff4c\uff4c width", "full width"),  # NFKC folds full-width letters
        ("\u00bfQu\u00e9 pasa?", "qu\u00e9 pasa"),
        ("?!...", ""),
        ("", ""),
    ],
)
def test_normalize_caption(raw: str, expected: str) -> None:
    assert normalize_caption(raw) == expected


def test_case_and_punctuation_do_not_change_scores() -> None:
    references = [["a dog", "a small dog"], ["a cat on a mat", "a cat"]]
    noisy = caption_scores(["A Dog!", "A CAT, on a mat."], references)
    assert noisy == caption_scores(["a dog", "a cat on a mat"], references)


def test_perfect_predictions_score_near_one() -> None:
    perfect = [refs[0] for refs in REFERENCES]
    scores = caption_scores(perfect, REFERENCES)
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL"):
        assert scores[key] == pytest.approx(1.0, abs=1e-6), key
    assert scores["cider"] > caption_scores(PREDICTIONS, REFERENCES)["cider"]


def test_total_miss_scores_zero() -> None:
    misses = ["purple elephant sings opera", "green zebra reads books", "orange whale flies high", "silver robot eats soup"]
    scores = caption_scores(misses, REFERENCES)
    assert scores["bleu1"] < 1e-6
    assert scores["rougeL"] == 0.0
    assert scores["cider"] == 0.0


def test_empty_reference_is_dropped() -> None:
    with_blank = [refs + ["?!", ""] for refs in REFERENCES]
    assert_scores_equal(caption_scores(PREDICTIONS, with_blank), coco_direct(PREDICTIONS, REFERENCES))


def test_empty_predictions_do_not_crash() -> None:
    # Blank predictions beside real ones: they must count as zero words, like "" given to pycocoevalcap.
    blank = ["", "   ", "?!", PREDICTIONS[1]]
    scores = caption_scores(blank, REFERENCES)
    assert_scores_equal(scores, coco_direct(["", "", "", PREDICTIONS[1]], REFERENCES))
    assert scores["bleu1"] > 0.0
    all_blank = caption_scores(["", "", "", ""], REFERENCES)
    assert all(value == pytest.approx(0.0, abs=1e-6) for value in all_blank.values())


def test_scoring_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    caption_scores(PREDICTIONS, REFERENCES)
    assert capsys.readouterr().out == ""  # pycocoevalcap's Bleu prints its counts unless verbose=0


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        (["a dog", "a cat"], [["a dog"]], "2 predictions but 1 reference lists"),
        (["a dog"], [["a dog"], ["a cat"]], "1 predictions but 2 reference lists"),
        ([], [], "nothing to score"),
        (["a dog", "a cat"], [["a dog"], []], "image 1 has no reference caption"),
        (["a dog", "a cat"], [["a dog"], ["!!", "  "]], "image 1 has no reference caption"),
    ],
)
def test_invalid_input_raises_value_error(
    predictions: list[str], references: list[list[str]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        caption_scores(predictions, references)


def test_reference_given_as_string_is_rejected() -> None:
    # A bare string would otherwise be read as a list of one-character references.
    with pytest.raises(TypeError, match=r"references\[0\] is a str"):
        caption_scores(["a dog"], ["a dog"])  # type: ignore[list-item]


def test_modules_load_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[tuple[object, ...]] = []

    def deny(*args: object, **kwargs: object) -> None:
        attempts.append(args)  # recorded too: evaluate swallows some connection errors and falls back
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", deny)
    monkeypatch.setattr(socket, "getaddrinfo", deny)
    monkeypatch.setattr(socket, "create_connection", deny)
    metrics._load_module.cache_clear()  # force a fresh evaluate.load of the module
    try:
        assert_scores_equal(caption_scores(PREDICTIONS, REFERENCES), coco_direct(PREDICTIONS, REFERENCES))
        assert attempts == []
    finally:
        metrics._load_module.cache_clear()


def test_one_module_is_loaded_once() -> None:
    caption_scores(PREDICTIONS, REFERENCES)
    before = metrics._load_module.cache_info()
    caption_scores(PREDICTIONS, REFERENCES)
    after = metrics._load_module.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 1  # one module computes every key


# --- CIDEr with document frequencies from a reference corpus


def test_corpus_document_frequency_counts_each_image_once() -> None:
    # Image 0 holds "a dog" in both references: it still counts once. "a" is in both images.
    df = corpus_document_frequency([["A dog runs!", "a dog"], ["a cat"]])
    assert dict(df.counts) == {
        ("a",): 2, ("dog",): 1, ("runs",): 1, ("cat",): 1,
        ("a", "dog"): 1, ("dog", "runs"): 1, ("a", "cat"): 1,
        ("a", "dog", "runs"): 1,
    }
    assert df.num_images == 2


def test_corpus_document_frequency_counts_like_pycocoevalcap() -> None:
    scorer = CiderScorer()
    for pred, refs in zip(PREDICTIONS, REFERENCES):
        scorer += (pred, refs)
    scorer.compute_doc_freq()
    df = corpus_document_frequency(NOISY_REFERENCES)  # normalised to REFERENCES first
    assert dict(df.counts) == dict(scorer.document_frequency) and df.num_images == len(REFERENCES)


def test_corpus_df_of_the_scored_set_gives_pycocoevalcap_cider() -> None:
    # pycocoevalcap's idf is the corpus idf of the scored references: the two computations must agree.
    scores = caption_scores(PREDICTIONS, REFERENCES, corpus_document_frequency(REFERENCES))
    assert_scores_equal(scores, coco_direct(PREDICTIONS, REFERENCES))


def test_corpus_df_scores_a_single_image() -> None:
    corpus = corpus_document_frequency(REFERENCES)
    refs = [REFERENCES[0]]
    exact = caption_scores(["a dog runs across the grass"], refs, corpus)
    close = caption_scores(["a dog running on the grass"], refs, corpus)
    far = caption_scores(["a dog on a sofa"], refs, corpus)
    miss = caption_scores(["purple elephant sings opera"], refs, corpus)
    # pycocoevalcap's value is 0 for any one image; the corpus idf ranks the predictions.
    assert exact["cider_coco"] == close["cider_coco"] == far["cider_coco"] == miss["cider_coco"] == 0.0
    assert exact["cider"] > close["cider"] > far["cider"] > miss["cider"] == 0.0
    assert caption_scores(["a dog runs across the grass"], refs)["cider"] == 0.0  # no corpus: the split's own idf


def test_corpus_df_gives_more_weight_to_rare_ngrams() -> None:
    # "red" is in 3 of 4 corpus images, "kite" in 1: matching the rare word beats matching the common
    # one, even with the common bigram "a red" matched too (uniform weights would rank them the other way).
    corpus = corpus_document_frequency([["a red ball"], ["a red car"], ["a red hat"], ["a blue kite"]])
    refs = [["a red kite"]]
    rare = caption_scores(["a blue kite"], refs, corpus)["cider"]
    common = caption_scores(["a red ball"], refs, corpus)["cider"]
    assert rare > common > 0.0


def test_cider_module_wants_document_frequency_with_corpus_images() -> None:
    with pytest.raises(ValueError, match="document_frequency and corpus_images together"):
        metrics._load_module().compute(predictions=["a dog"], references=[["a dog"]], document_frequency={})


@pytest.mark.parametrize(
    ("references", "error", "message"),
    [
        ([], ValueError, "reference corpus is empty"),
        ([["a dog"], ["?!"]], ValueError, "image 1 has no reference caption"),
        ("a dog", TypeError, "not a single string"),
        ([["a dog"], "a cat"], TypeError, r"references\[1\] is a str"),
    ],
)
def test_corpus_document_frequency_rejects_bad_corpus(references: list, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        corpus_document_frequency(references)


@pytest.mark.parametrize(
    ("setting", "n_images", "expected"),
    [
        ("split", 1, "split"),
        ("corpus", 100_000, "corpus"),
        ("auto", 1, "corpus"),
        ("auto", CIDER_DF_AUTO_MIN_IMAGES - 1, "corpus"),
        ("auto", CIDER_DF_AUTO_MIN_IMAGES, "split"),
        ("auto", 100_000, "split"),
    ],
)
def test_resolve_cider_df(setting: str, n_images: int, expected: str) -> None:
    assert resolve_cider_df(setting, n_images) == expected


@pytest.mark.parametrize(("setting", "n_images", "message"), [("coco", 5, "cider_df='coco'"), ("auto", 0, "at least 1 image")])
def test_resolve_cider_df_rejects_bad_input(setting: str, n_images: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_cider_df(setting, n_images)


def random_captions(seed: int, images: int) -> tuple[list[str], list[list[str]]]:
    """Predictions and 1-5 references per image from a small vocabulary: many partial n-gram matches, some empty
    predictions, references of several lengths (BLEU's closest-length rule has ties to break)."""
    rng = random.Random(seed)
    words = "a the red blue two players ball chase near left right goal at night in middle of pitch".split()

    def caption(shortest: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(shortest, 12)))

    return ([caption(0) for _ in range(images)],
            [[caption(1) for _ in range(rng.randint(1, 5))] for _ in range(images)])


def test_per_image_scores_give_back_the_corpus_scores_exactly() -> None:
    predictions, references = random_captions(seed=3, images=120)
    expected = coco_direct(predictions, references)
    scores, images = score_images(predictions, references)
    assert scores == caption_scores(predictions, references)
    recomputed = images.corpus()
    for key in METRIC_KEYS:  # BLEU from the summed statistics, the others as means of the per-image values
        assert recomputed[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15), key
    assert len(images) == 120 and images.bleu_stats.shape == (120, 10)


def test_per_image_bleu_statistics_are_each_images_own() -> None:
    predictions, references = random_captions(seed=4, images=30)
    _, images = score_images(predictions, references)
    for i in (0, 7, 29):  # one image scored alone has the same statistics, hence the same sentence-level BLEU
        _, alone = score_images([predictions[i]], [references[i]])
        assert alone.bleu_stats[0].tolist() == images.bleu_stats[i].tolist()
        single, _ = Bleu(4).compute_score({0: references[i]}, {0: [predictions[i]]}, verbose=0)
        assert images.rows()["bleu4"][i] == pytest.approx(single[3], rel=1e-12, abs=1e-15)


def test_per_image_cider_uses_the_corpus_idf_when_given() -> None:
    predictions, references = random_captions(seed=5, images=40)
    document_frequency = corpus_document_frequency(random_captions(seed=6, images=80)[1])
    scores, images = score_images(predictions, references, document_frequency)
    assert images.corpus()["cider"] == pytest.approx(scores["cider"], rel=1e-12)
    assert images.corpus()["cider_coco"] == pytest.approx(coco_direct(predictions, references)["cider_coco"], rel=1e-12)
    assert images.means["cider"].tolist() != images.means["cider_coco"].tolist()


def test_weighted_corpus_scores_equal_scoring_the_repeated_images() -> None:
    predictions, references = random_captions(seed=7, images=12)
    _, images = score_images(predictions, references)
    counts = np.array([[2, 0, 1, 1, 0, 3, 1, 1, 0, 1, 1, 1]])
    chosen = [i for i, count in enumerate(counts[0]) for _ in range(count)]
    direct = coco_direct([predictions[i] for i in chosen], [references[i] for i in chosen])
    weighted = images.corpus(counts)
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL"):  # CIDEr's own idf would change with the set
        assert weighted[key][0] == pytest.approx(direct[key], rel=1e-12), key


def test_per_image_rows_read_back_to_the_same_scores() -> None:
    predictions, references = random_captions(seed=8, images=20)
    _, images = score_images(predictions, references)
    again = ImageScores.from_rows(json.loads(json.dumps(images.rows())))
    assert again.corpus() == images.corpus()
