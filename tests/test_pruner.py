"""The sweep's pruners, on real Optuna studies (in memory, or a journal file two workers share): the schedule-aware
median rule, and the paired test on planted per-image scores."""
import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution

from blipexp.sweep.paired import PairedPruner
from blipexp.sweep.pruner import ScheduleMedianPruner

DISTRIBUTIONS = {"epochs": IntDistribution(1, 12), "learning_rate": FloatDistribution(1e-5, 1e-2, log=True)}


def study_with(complete: list[dict[int, float]], direction="maximize", pruner=None) -> optuna.Study:
    """A study whose complete trials reported `complete` (epoch -> value), each with as many epochs as it reported."""
    study = optuna.create_study(direction=direction, pruner=pruner or ScheduleMedianPruner(default_epochs=8))
    for values in complete:
        study.add_trial(optuna.trial.create_trial(
            params={"epochs": max(values), "learning_rate": 1e-3}, distributions=DISTRIBUTIONS,
            intermediate_values=values, value=max(values.values()) if direction == "maximize" else min(values.values())))
    return study


def running(study: optuna.Study, epochs: int, values: dict[int, float]) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_int("epochs", epochs, epochs)
    for epoch, value in values.items():
        trial.report(value, epoch)
    return trial


FOUR_EPOCHS = {1: 1.0, 2: 2.0, 3: 3.0, 4: 5.0}  # a short schedule annealed to its best at its end


def test_a_long_trial_is_compared_with_short_ones_at_the_same_point_of_their_schedule():
    pruner = ScheduleMedianPruner(default_epochs=8)
    study = study_with([FOUR_EPOCHS] * 3, pruner=pruner)
    long = running(study, 12, {1: 0.5, 2: 2.5, 3: 3.0, 4: 3.5})  # a third through: short ones were at 1.0 there
    assert not long.should_prune()
    epoch_by_epoch = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    assert epoch_by_epoch.prune(study, study._storage.get_trial(long._trial_id)), \
        "Optuna's rule compares it with the short trials' ends (5.0) and cuts it"


def test_a_trial_below_the_median_at_the_same_point_is_pruned():
    study = study_with([FOUR_EPOCHS, FOUR_EPOCHS, {1: 0.2, 2: 0.3, 3: 0.4, 4: 0.5}])
    assert running(study, 12, {1: 0.5, 2: 0.5, 3: 0.6}).should_prune()  # below 1.0 at a quarter of the schedule
    assert not running(study, 12, {1: 0.5, 2: 0.5, 3: 1.1}).should_prune()
    assert running(study, 4, {1: 0.5}).should_prune(), "equal schedules compare epoch by epoch"


def test_nothing_is_pruned_before_three_complete_trials_or_against_fewer_than_two_at_that_point():
    assert not running(study_with([FOUR_EPOCHS] * 2), 4, {1: 0.0, 2: 0.0}).should_prune()
    # a 12-epoch trial's first epoch is before any 2-epoch trial's first report: nothing to compare with
    study = study_with([{1: 3.0, 2: 4.0}] * 3)
    assert not running(study, 12, {1: 0.0}).should_prune()
    assert running(study, 12, {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.0}).should_prune()


def test_epochs_not_searched_come_from_the_spec_and_minimising_prunes_the_higher_values():
    study = study_with([{1: 1.0, 2: 0.8}] * 3, direction="minimize", pruner=ScheduleMedianPruner(default_epochs=2))
    trial = study.ask()  # no epochs parameter: the spec's 2
    trial.report(1.5, 1)
    assert trial.should_prune()
    other = study.ask()
    other.report(0.9, 1)
    assert not other.should_prune()


@pytest.mark.parametrize("prune, pruner, objective, expected", [
    (True, "median", "cider", ScheduleMedianPruner),
    (True, "paired", "cider", PairedPruner),
    (True, "auto", "cider", PairedPruner),  # a caption metric has per-image scores to pair
    (True, "auto", "loss", ScheduleMedianPruner),  # loss has none
    (False, "paired", "cider", optuna.pruners.NopPruner)])
def test_a_sweep_prunes_as_the_spec_says(tmp_path, prune, pruner, objective, expected):
    from blipexp.experiment import catalog
    from blipexp.sweep import open_study
    from tests.test_sweep import SWEEP_EXPERIMENTS

    spec = catalog.load("small_sweep", SWEEP_EXPERIMENTS).replace(prune=prune, pruner=pruner,
                                                                   objective_metric=objective)
    assert type(open_study(spec, tmp_path).pruner) is expected


def test_sweeps_prune_on_paired_evidence_by_default():
    """The benchmark found the paired test at least as good as the median rule in fewer epochs (docs/sweeps.md)."""
    from blipexp.experiment.spec import ExperimentSpec

    assert ExperimentSpec().pruner == "auto"
    assert ExperimentSpec().pruner_used == "paired"
    assert ExperimentSpec(objective_metric="loss").pruner_used == "median"


def test_the_paired_pruner_needs_a_caption_metric_and_a_significance_level():
    from blipexp.experiment.spec import ExperimentSpec

    with pytest.raises(ValueError, match="pruner='paired' tests per-image scores, which objective_metric='loss' has "
                                         "none of: --set pruner=median"):
        ExperimentSpec(pruner="paired", objective_metric="loss")
    with pytest.raises(ValueError, match=r"prune_alpha=0.0 must be in \(0, 1\)"):
        ExperimentSpec(prune_alpha=0.0)


# --- the paired pruner: per-image scores planted, no training

def planted(values) -> "ImageScores":
    from blipexp.scoring.metrics import ImageScores

    return ImageScores.of_column("cider", np.asarray(values, dtype=float))


def paired_study(storage=None, name=None) -> tuple[optuna.Study, PairedPruner]:
    pruner = PairedPruner(default_epochs=4, metric="cider", alpha=0.05, seed=0)
    return optuna.create_study(direction="maximize", pruner=pruner, storage=storage, study_name=name,
                               load_if_exists=True), pruner


def run_epochs(study: optuna.Study, pruner: PairedPruner, epochs: int, scores: dict[int, np.ndarray]) -> optuna.Trial:
    """A trial of `epochs` epochs reporting each epoch's planted per-image scores (their mean is its objective)."""
    trial = study.ask()
    trial.suggest_int("epochs", epochs, epochs)
    for epoch, values in scores.items():
        trial.report(float(np.mean(values)), epoch)
        pruner.record(trial.number, epoch, planted(values))
    return trial


def complete(study: optuna.Study, pruner: PairedPruner, epochs: int, scores: dict[int, np.ndarray]) -> None:
    trial = run_epochs(study, pruner, epochs, scores)
    study.tell(trial, float(np.mean(scores[max(scores)])))
    pruner.completed(study, trial.number)


IMAGES = np.random.default_rng(0).normal(3.0, 1.0, size=40)  # the best trial's per-image CIDEr at its epoch 1
NOISE = np.random.default_rng(1).normal(0.0, 1.0, size=40)  # another trial's per-image difference, mean about 0


def test_a_trial_significantly_worse_than_the_best_on_the_same_images_is_pruned_and_one_within_noise_is_not():
    study, pruner = paired_study()
    complete(study, pruner, 4, {1: IMAGES, 2: IMAGES + 1, 3: IMAGES + 2, 4: IMAGES + 3})
    worse = run_epochs(study, pruner, 4, {1: IMAGES - 0.2 + NOISE / 10})  # 0.2 behind on every image
    assert worse.should_prune()
    close = IMAGES - 0.2 + NOISE  # as far behind on average, but image by image within noise
    assert not run_epochs(study, pruner, 4, {1: close}).should_prune()
    assert np.mean(close) < np.mean(IMAGES) - 0.1, "behind on average, as the worse one: the median rule prunes both"
    assert not run_epochs(study, pruner, 4, {1: IMAGES + 1}).should_prune(), "ahead: never pruned"


def test_a_long_trial_is_held_to_the_best_trials_epoch_at_the_same_point_of_its_schedule_not_its_end():
    study, pruner = paired_study()
    complete(study, pruner, 4, {1: IMAGES, 2: IMAGES + 1, 3: IMAGES + 2, 4: IMAGES + 3})
    long = run_epochs(study, pruner, 12, {1: IMAGES - 2, 2: IMAGES - 1, 3: IMAGES + 0.1})  # a quarter through
    difference = pruner.difference(study, study._storage.get_trial(long._trial_id))
    assert difference.a == pytest.approx(np.mean(IMAGES), abs=1e-3), "the best trial's epoch 1 of 4"
    assert difference.b == pytest.approx(np.mean(IMAGES) + 0.1, abs=1e-3), "its own best epoch so far (3)"
    assert not long.should_prune()
    early = run_epochs(study, pruner, 12, {1: IMAGES - 2, 2: IMAGES - 2})  # before the best trial's first report
    assert pruner.difference(study, study._storage.get_trial(early._trial_id)) is None and not early.should_prune()


def test_nothing_is_pruned_without_a_complete_trial_on_too_few_images_or_when_an_image_was_left_out():
    study, pruner = paired_study()
    assert not run_epochs(study, pruner, 4, {1: IMAGES - 3}).should_prune(), "no complete trial yet"
    complete(study, pruner, 4, {1: IMAGES})
    left_out = run_epochs(study, pruner, 4, {})
    left_out.report(0.0, 1)
    pruner.record(left_out.number, 1, None)  # an image stopped decoding: the sets are not the same images
    assert not left_out.should_prune()
    few, few_pruner = paired_study()
    complete(few, few_pruner, 4, {1: IMAGES[:9]})
    assert not run_epochs(few, few_pruner, 4, {1: IMAGES[:9] - 3}).should_prune(), "9 images: no test"


def test_the_best_trials_scores_are_shared_through_the_storage_bounded_and_replaced_only_by_a_better_trial(tmp_path):
    from blipexp.sweep.paired import MAX_IMAGES, REFERENCE
    from blipexp.sweep.study import optuna_storage

    many = np.random.default_rng(2).normal(3.0, 1.0, size=MAX_IMAGES + 100)
    one, one_pruner = paired_study(optuna_storage(tmp_path), "shared")  # two workers on one journal file
    other, other_pruner = paired_study(optuna_storage(tmp_path), "shared")
    complete(one, one_pruner, 4, {1: many, 2: many + 1})
    stored = other.user_attrs[REFERENCE]
    assert stored["trial"] == 0 and [len(v) for v in stored["scores"].values()] == [MAX_IMAGES, MAX_IMAGES]
    assert run_epochs(other, other_pruner, 4, {1: many - 0.5}).should_prune(), "the other worker reads them"
    complete(other, other_pruner, 4, {1: many - 1, 2: many - 0.5})  # complete, not the best: the reference stays
    assert one.user_attrs[REFERENCE]["trial"] == 0
    complete(other, other_pruner, 4, {1: many, 2: many + 2})
    assert one.user_attrs[REFERENCE]["trial"] == 3
