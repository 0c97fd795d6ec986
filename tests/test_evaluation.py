"""Scoring: generated captions against references, subsets, the best epoch, CIDEr's idf, paired scores."""
import random

import numpy as np
import pytest
from transformers import EvalPrediction

from blipexp.data.collator import IGNORE_INDEX
from blipexp.data.pitch import random_scene
from blipexp.data.sources import CaptionData, Example
from blipexp.experiment.spec import ExperimentSpec
from blipexp.model.tiny import build_tiny_processor
from blipexp.scoring.evaluation import (
    SplitScores,
    best_epoch,
    cider_document_frequency,
    compute_metrics_for,
    decode,
    validation_subset,
)
from blipexp.scoring.metrics import caption_scores, corpus_document_frequency, score_images

CAPTIONS = ["a red player dribbles the ball", "two blue players chase the ball", "a goalkeeper saves a shot"]


def examples(n: int) -> list[Example]:
    return [Example(key=f"{i}.png", captions=(CAPTIONS[i % 3],), ref=f"{i}.png") for i in range(n)]


def caption_data(n_train: int, n_val: int) -> CaptionData:
    train, validation = examples(n_train), examples(n_val)
    return CaptionData(train=train, validation=validation, test=[], skipped={}, total=n_train + n_val,
                       fingerprint="f", source="s")


def padded_ids(tokenizer, texts: list[str]) -> np.ndarray:
    return np.asarray(tokenizer(texts, padding="max_length", max_length=12)["input_ids"])


def test_decode_reads_masked_positions_as_padding():
    tokenizer = build_tiny_processor(CAPTIONS).tokenizer
    ids = padded_ids(tokenizer, CAPTIONS[:2])
    ids[ids == tokenizer.pad_token_id] = IGNORE_INDEX
    assert decode(tokenizer, ids) == CAPTIONS[:2]


def test_images_found_unusable_are_left_out_of_the_scores():
    tokenizer = build_tiny_processor(CAPTIONS).tokenizer
    predictions = padded_ids(tokenizer, ["a red player", "two blue players chase the ball", "a red player"])
    labels = padded_ids(tokenizer, CAPTIONS)
    labels[1] = IGNORE_INDEX  # the second image could not be read: every label masked
    references = [[c] for c in CAPTIONS]
    scores = compute_metrics_for(tokenizer, references)(EvalPrediction(predictions, labels))
    assert scores == caption_scores(["a red player", "a red player"], [references[0], references[2]])
    with pytest.raises(AssertionError, match="2 predictions for 3 references"):
        compute_metrics_for(tokenizer, references)(EvalPrediction(predictions[:2], labels[:2]))


def test_the_validation_subset_is_fixed_and_only_taken_from_a_larger_split():
    spec = ExperimentSpec().tiny().replace(val_subset=5)
    split = examples(12)
    first, again = validation_subset(split, spec), validation_subset(split, spec)
    assert len(first) == 5 and [e.key for e in first] == [e.key for e in again]
    assert [e.key for e in first] == sorted((e.key for e in first), key=lambda k: int(k.split(".")[0])), "in order"
    assert validation_subset(split, spec.replace(split_seed=1)) != first, "seeded by split_seed"
    assert validation_subset(split, spec.replace(val_subset=0)) == split
    assert validation_subset(split[:5], spec) == split[:5]


@pytest.mark.parametrize("objective, expected", [("cider", 2), ("loss", 3)])
def test_the_best_epoch_follows_the_objective_direction_and_skips_epoch_0(objective, expected):
    spec = ExperimentSpec().tiny().replace(objective_metric=objective)
    history = [{"epoch": 0, "cider": 9.0, "loss": 0.1},  # better than any trained epoch: never chosen
               {"epoch": 1, "cider": 1.0, "loss": 3.0},
               {"epoch": 2, "cider": 2.0, "loss": 2.0},
               {"epoch": 3, "cider": 1.5, "loss": 1.0}]
    assert best_epoch(history, spec)["epoch"] == expected
    with pytest.raises(AssertionError, match="no evaluation"):
        best_epoch(history[:1], spec)


def test_cider_takes_its_idf_from_the_corpus_when_too_few_images_are_scored(capsys):
    spec = ExperimentSpec().tiny()
    data = caption_data(n_train=6, n_val=3)
    assert cider_document_frequency(spec.replace(cider_df="split"), data, n_scored=3, echo=True) is None
    assert cider_document_frequency(spec, data, n_scored=100, echo=True) is None, "enough images for their own"
    assert capsys.readouterr().out == ""
    corpus = cider_document_frequency(spec, data, n_scored=3, echo=True)
    assert corpus is not None
    assert "idf from the references of 9 training + validation images" in capsys.readouterr().out
    assert cider_document_frequency(spec.replace(cider_df="corpus"), data, n_scored=100, echo=False) is not None


def scored(split: str, keys: list[str], captions: list[str], references: list[list[str]]) -> SplitScores:
    metrics, images = score_images(captions, references, corpus_document_frequency(references))
    return SplitScores(split, keys, captions, references, metrics, images, idf="corpus")


def test_a_paired_comparison_matches_the_images_by_key():
    rng = random.Random(0)
    scenes = [random_scene(rng) for _ in range(24)]
    keys, references = [f"images/{i:02d}.png" for i in range(24)], [[s.caption] for s in scenes]
    captions = [s.caption if i % 3 else random_scene(rng).caption for i, s in enumerate(scenes)]
    a = scored("test", keys, captions, references)
    reordered = scored("test", keys[::-1], captions[::-1], references[::-1])  # the same captions, listed backwards
    same = a.paired(reordered, 200, seed=0)["cider"]
    assert same.images == 24 and same.difference == 0 and same.ci_low == same.ci_high == 0 and same.p_value == 1

    fewer = scored("test", keys[1:][::-1], [s.caption for s in scenes[1:]][::-1], references[1:][::-1])
    gain = a.paired(fewer, 200, seed=0)["cider"]  # B could not read the first image: both are judged without it
    assert gain.images == 23 and gain.a == pytest.approx(float(np.mean(a.images.means["cider"][1:])))
    assert gain.b == pytest.approx(fewer.metrics["cider"]) and gain.difference > 0
    with pytest.raises(ValueError, match="the 24 and 2 scored test images share none"):
        a.paired(scored("test", ["other/1.png", "other/2.png"], captions[:2], references[:2]), 200, seed=0)
