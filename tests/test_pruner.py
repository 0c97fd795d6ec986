"""The schedule-aware median pruner, on real Optuna studies (in memory)."""
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution

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


@pytest.mark.parametrize("prune, expected", [(True, ScheduleMedianPruner), (False, optuna.pruners.NopPruner)])
def test_a_sweep_prunes_by_schedule_unless_the_spec_says_not_to(tmp_path, prune, expected):
    from blipexp.experiment import catalog
    from blipexp.sweep import open_study
    from tests.test_sweep import SWEEP_EXPERIMENTS

    spec = catalog.load("small_sweep", SWEEP_EXPERIMENTS).replace(prune=prune)
    assert type(open_study(spec, tmp_path).pruner) is expected
