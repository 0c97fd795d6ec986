"""Intervals and paired tests on captions of known quality: generated pitch scenes, described by simulated models
that get each fact of a scene (team, number of players, place, day or night) right with a set probability.

A population of images is scored once; each draw takes a sample of it, as a test split is a sample of the images a
model will meet. Per-image scores do not depend on which other images are drawn (CIDEr with a fixed corpus idf), so
a draw's scores are the population's rows.
"""
from __future__ import annotations

import random

import numpy as np
import pytest

from blipexp.data.pitch import COUNT_WORDS, TEAMS, ZONES, Scene, random_scene
from blipexp.experiment.metric_keys import METRIC_KEYS
from blipexp.scoring import evidence
from blipexp.scoring.metrics import ImageScores, corpus_document_frequency, score_images

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop

POPULATION = 1500  # images
SAMPLE = 100  # images per draw: a small test split
DRAWS = 240
RESAMPLES = 1000


def describe(scene: Scene, accuracy: float, rng: random.Random) -> str:
    """A caption of the scene whose every fact is right with probability `accuracy`, else another value."""
    def fact(right, options):
        return right if rng.random() < accuracy else rng.choice([o for o in options if o != right])

    guess = Scene(team=fact(scene.team, sorted(TEAMS)), players=fact(scene.players, sorted(COUNT_WORDS)),
                  zone=fact(scene.zone, ZONES), night=fact(scene.night, (False, True)))
    return guess.caption


def paraphrase(scene: Scene) -> str:
    place = {"left": "by the left goal", "middle": "at the centre of the pitch", "right": "by the right goal"}[scene.zone]
    return f"{COUNT_WORDS[scene.players]} {'player' if scene.players == 1 else 'players'} in {scene.team} " \
           f"{'runs' if scene.players == 1 else 'run'} after the ball {place}" + (" in the dark" if scene.night else "")


@pytest.fixture(scope="module")
def population():
    """(references, scores of a 0.6-accurate model A, of an equally good model A2, of a 0.8-accurate model B)."""
    rng = random.Random(0)
    scenes = [random_scene(rng) for _ in range(POPULATION)]
    references = [[scene.caption, paraphrase(scene)] for scene in scenes]
    idf = corpus_document_frequency([[s.caption, paraphrase(s)] for s in (random_scene(rng) for _ in range(400))])
    models = {}
    for name, accuracy in (("a", 0.6), ("a2", 0.6), ("b", 0.8)):
        captions = [describe(scene, accuracy, rng) for scene in scenes]
        models[name] = score_images(captions, references, idf)[1]
    return models


def draws(seed: int):
    rng = np.random.default_rng(seed)
    for draw in range(DRAWS):
        yield draw, rng.choice(POPULATION, size=SAMPLE, replace=False)


@pytest.mark.parametrize("metric", ["cider", "bleu4"])
def test_the_95_interval_covers_the_population_value_in_about_95_percent_of_draws(population, metric):
    scores: ImageScores = population["a"]
    truth = scores.corpus()[metric]
    covered = 0
    for draw, chosen in draws(seed=1):
        interval = evidence.intervals(scores.subset(chosen), RESAMPLES, seed=draw)[metric]
        covered += interval.low <= truth <= interval.high
    assert 0.90 <= covered / DRAWS <= 0.98, f"{metric}: covered in {covered} of {DRAWS} draws"


@pytest.mark.parametrize("metric", ["cider", "bleu4"])
def test_the_paired_test_rejects_equal_models_at_about_alpha(population, metric):
    rejected = 0
    for draw, chosen in draws(seed=2):
        result = evidence.paired(population["a"].subset(chosen), population["a2"].subset(chosen), RESAMPLES, draw)
        rejected += result[metric].significant(0.05)
    assert 0.02 <= rejected / DRAWS <= 0.08, f"{metric}: rejected in {rejected} of {DRAWS} draws"


def test_the_paired_test_detects_a_clearly_better_model(population):
    found = 0
    for draw, chosen in list(draws(seed=3))[:40]:
        result = evidence.paired(population["a"].subset(chosen), population["b"].subset(chosen), RESAMPLES, draw)
        cider = result["cider"]
        found += cider.significant() and cider.difference > 0 and cider.ci_low > 0
    assert found >= 38, f"B (0.8 accurate) found better than A (0.6) in {found} of 40 draws"


def test_the_same_model_against_itself_is_no_difference(population):
    scores = population["a"].subset(range(50))
    result = evidence.paired(scores, scores, 200, seed=0)
    assert all(r.difference == 0 and r.p_value == 1.0 and r.ci_low == r.ci_high == 0 for r in result.values())
    assert result["cider"].verdict().startswith("no significant difference on cider: +0 [+0, +0], p = 1.000")


def test_intervals_are_seeded_and_contain_the_estimate(population):
    scores = population["b"].subset(range(64))
    first, again = evidence.intervals(scores, 500, seed=42), evidence.intervals(scores, 500, seed=42)
    assert first == again and first != evidence.intervals(scores, 500, seed=7)
    value = scores.corpus()
    assert all(first[key].low <= value[key] <= first[key].high for key in first)


def test_no_resamples_means_no_intervals(population):
    assert evidence.intervals(population["a"].subset(range(10)), 0, seed=0) == {}
    with pytest.raises(ValueError, match="resamples=0"):
        evidence.paired(population["a"].subset(range(10)), population["b"].subset(range(10)), 0, seed=0)


def test_too_few_images_get_no_interval_and_no_test(population):
    few, enough = evidence.MIN_IMAGES - 1, evidence.MIN_IMAGES
    assert evidence.intervals(population["b"].subset(range(few)), 1000, seed=0) == {}
    assert set(evidence.intervals(population["b"].subset(range(enough)), 1000, seed=0)) == set(METRIC_KEYS)
    one = evidence.paired(population["a"].subset([0]), population["b"].subset([0]), 1000, seed=0)["cider"]
    assert (one.ci_low, one.ci_high, one.p_value) == (None, None, None) and not one.significant(0.99)
    result = evidence.paired(population["a"].subset(range(few)), population["b"].subset(range(few)), 1000, seed=0)
    cider = result["cider"]
    assert not cider.tested and cider.difference == pytest.approx(cider.b - cider.a) != 0
    assert cider.verdict(a="version 1", b="version 2") == (
        f"too few images for an interval (n={few}, fewer than {enough}): version 2 - version 1 on cider is "
        f"{cider.difference:+.3g}, untested")
    assert cider.as_dict()["p_value"] is None
    assert evidence.paired(population["a"].subset(range(enough)), population["b"].subset(range(enough)), 1000,
                           seed=0)["cider"].tested


def test_a_comparison_needs_the_same_images(population):
    with pytest.raises(ValueError, match="same images: got 10 and 12"):
        evidence.paired(population["a"].subset(range(10)), population["b"].subset(range(12)), 100, seed=0)
    with pytest.raises(ValueError, match="same images: got 0 and 0"):
        evidence.paired(population["a"].subset([]), population["b"].subset([]), 100, seed=0)


def test_verdict_lines_name_the_winner_and_the_signed_interval_of_its_lead():
    better = evidence.Difference("cider", a=4.2, b=4.61, ci_low=0.12, ci_high=0.7, p_value=0.004, images=64)
    assert better.verdict(a="version 1", b="version 2") == \
        "version 2 is better than version 1 on cider by 0.41 [0.12, 0.7], p = 0.004 (64 images)"
    worse = evidence.Difference("loss", a=1.0, b=1.5, ci_low=0.2, ci_high=0.8, p_value=0.01, images=64)
    assert worse.verdict(higher_is_better=False) == "A is better than B on loss by 0.5 [0.2, 0.8], p = 0.010 (64 images)"
    dropped = evidence.Difference("cider", a=4.7, b=1.2, ci_low=-4.4, ci_high=-2.7, p_value=0.001, images=64)
    assert dropped.verdict() == "A is better than B on cider by 3.5 [2.7, 4.4], p = 0.001 (64 images)"
    noise = evidence.Difference("cider", a=4.647, b=4.695, ci_low=-0.58, ci_high=0.64, p_value=0.42, images=64)
    assert noise.verdict() == "no significant difference on cider: +0.048 [-0.58, +0.64], p = 0.420 (64 images)"
    ahead = evidence.Difference("cider", a=4.0, b=4.669, ci_low=-0.051, ci_high=1.313, p_value=0.07, images=30)
    assert ahead.verdict(alpha=0.1) == "B is better than A on cider by 0.669 [-0.051, 1.31], p = 0.070 (30 images)"
    behind = evidence.Difference("cider", a=4.669, b=4.0, ci_low=-1.313, ci_high=0.051, p_value=0.07, images=30)
    assert behind.verdict(alpha=0.1) == "A is better than B on cider by 0.669 [-0.051, 1.31], p = 0.070 (30 images)"


def test_a_verdict_says_where_the_interval_and_p_disagree():
    ahead = evidence.Difference("cider", a=4.0, b=4.669, ci_low=-0.051, ci_high=1.313, p_value=0.03, images=30)
    assert ahead.verdict() == (
        "B is better than A on cider by 0.669 [-0.051, 1.31], p = 0.030 (30 images); but the 95% interval includes 0 "
        "(the bootstrap finds no difference at 0.05 where the randomization test does): borderline evidence")
    behind = evidence.Difference("cider", a=4.669, b=4.0, ci_low=-1.313, ci_high=0.051, p_value=0.03, images=30)
    assert behind.verdict().startswith("A is better than B on cider by 0.669 [-0.051, 1.31], p = 0.030 (30 images); "
                                       "but the 95% interval includes 0")
    unconfirmed = evidence.Difference("cider", a=4.0, b=4.3, ci_low=0.02, ci_high=0.61, p_value=0.07, images=30)
    assert unconfirmed.verdict() == (
        "no significant difference on cider: +0.3 [+0.02, +0.61], p = 0.070 (30 images); but the 95% interval "
        "excludes 0 (the bootstrap finds a difference at 0.05 where the randomization test does not): borderline "
        "evidence")


def test_alpha_is_a_significance_level():
    assert evidence.check_alpha(0.05) == 0.05
    for alpha in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match=f"--alpha {alpha}: a significance level in .0, 1."):
            evidence.check_alpha(alpha)


def test_signature_records_how_the_numbers_were_made():
    assert evidence.signature(1000, 42, "corpus", 64) == "bs:1000|seed:42|idf:corpus|images:64"
    assert evidence.signature(1000, 42, "split", 64, test="ar") == "bs:1000|seed:42|idf:split|images:64|test:ar"


def test_resample_weights_draw_every_image_count_times():
    weights = evidence.resample_weights(images=7, resamples=5, rng=np.random.default_rng(0))
    assert weights.shape == (5, 7) and (weights.sum(axis=1) == 7).all() and weights.min() >= 0
