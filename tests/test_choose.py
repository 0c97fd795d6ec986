"""Which configuration a sweep registers and how sure it says it is (sweep/choose.py), on planted trials and
confirmation outcomes: no training, no store."""
import optuna
import pytest

from blipexp.scoring import evidence
from blipexp.experiment.spec import ExperimentSpec
from blipexp.sweep import choose
from blipexp.sweep.confirm import Spread

LR = optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)


def trial(number: int, lr: float, value: float) -> optuna.trial.FrozenTrial:
    planted = optuna.trial.create_trial(params={"learning_rate": lr}, distributions={"learning_rate": LR}, value=value)
    planted.number = number
    return planted


def configuration(number: int, value: float, fresh: list[float]) -> choose.Configuration:
    return choose.Configuration(trial(number, 1e-3 * (number + 1), value), [43, 44, 45][:len(fresh)],
                                Spread(value, fresh))


def test_the_best_mean_over_fresh_seeds_wins_over_the_luckiest_trial():
    spec = ExperimentSpec().replace(n_trials=3, confirm_top=2, confirm_seeds=2)
    lucky, steady = configuration(0, 9.0, [4.3, 4.4]), configuration(1, 8.0, [6.3, 6.4])
    choice = choose._on_fresh_seeds(spec, [lucky, steady])
    assert choice.chosen.number == 1 and choice.separated is True
    assert choice.by == "mean validation cider over 2 fresh seeds, top 2 configurations"
    assert choice.line == ("choice: trial 1 by the mean validation cider over 2 fresh seeds, top 2 configurations: "
                           "6.3500 ± 0.0707 against trial 0's 4.3500 ± 0.0707; separated: the lead 2.0000 is more "
                           "than two standard errors of the difference (0.1414); trial 0, the best single trial "
                           "(9.0000), lost on the mean")
    assert choice.tags() == {"chosen_by": choice.by, "chosen_trial": "1", "chosen_separated": "true"}
    assert choice.table() == {"trial": [0, 1], "params": ["learning_rate=0.001", "learning_rate=0.002"],
                              "seeds": ["43, 44", "43, 44"], "objective_mean": [pytest.approx(4.35), 6.35],
                              "objective_sd": [pytest.approx(0.0707, abs=1e-4), pytest.approx(0.0707, abs=1e-4)],
                              "trial_objective": [9.0, 8.0], "chosen": [False, True]}


def test_means_within_two_standard_errors_are_not_separated_and_a_tie_keeps_the_better_trial():
    spec = ExperimentSpec().replace(n_trials=3, confirm_top=3, confirm_seeds=3)
    close = [configuration(0, 5.0, [4.0, 5.0, 6.0]), configuration(1, 4.9, [4.5, 5.5, 6.5]),
             configuration(2, 4.0, [1.0, 1.0, 1.0])]
    choice = choose._on_fresh_seeds(spec, close)
    assert choice.chosen.number == 1 and choice.separated is False  # 0.5 apart, 2 x sqrt(1/3 + 1/3) = 1.63
    assert "; not separated: the lead 0.5000 is within two standard errors of the difference (1.6330)" in choice.line
    assert choice.tags()["chosen_separated"] == "false"
    tied = [configuration(0, 5.0, [5.0, 6.0]), configuration(1, 4.9, [6.0, 5.0])]
    assert choose._on_fresh_seeds(spec.replace(confirm_top=2, confirm_seeds=2), tied).chosen.number == 0
    assert "lost on the mean" not in choose._on_fresh_seeds(spec, close[1:]).line


def test_a_lower_is_better_objective_chooses_the_lowest_mean():
    spec = ExperimentSpec().replace(objective_metric="loss", n_trials=2, confirm_top=2, confirm_seeds=2)
    choice = choose._on_fresh_seeds(spec, [configuration(0, 1.0, [2.0, 2.2]), configuration(1, 1.1, [1.5, 1.6])])
    assert choice.chosen.number == 1 and choice.by.startswith("mean validation loss over 2 fresh seeds")


def _study(values: list[float]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for number, value in enumerate(values):
        study.add_trial(trial(number, 1e-3 * (number + 1), value))
    return study


@pytest.mark.parametrize("separation, verdict, separated", [
    (evidence.Difference("cider", 4.0, 5.0, 0.4, 1.6, 0.002, images=64), "separated from the runner-up, trial 0 "
     "(paired test on 64 validation images, p = 0.002)", True),
    (evidence.Difference("cider", 4.9, 5.0, -0.3, 0.5, 0.41, images=64), "not separated from the runner-up, trial 0 "
     "(paired test on 64 validation images, p = 0.410)", False),
    (evidence.Difference("cider", 4.0, 5.0, None, None, None, images=6), "untested against the runner-up, trial 0 "
     "(paired test on 6 validation images: too few)", None),
])
def test_without_confirmation_the_line_says_the_best_trial_won_on_one_seed_and_whether_it_stands_out(
        separation, verdict, separated):
    spec = ExperimentSpec().replace(n_trials=2)
    choice = choose._on_trials(spec, _study([4.0, 5.0]), (1, 0, separation), [])
    assert choice.chosen.number == 1 and choice.separated is separated
    assert choice.line == f"choice: trial 1 (cider 5.0000) by the best validation cider of 2 trials, one seed each; " \
        f"{verdict}"
    assert ("chosen_separated" in choice.tags()) == (separated is not None)


def test_one_confirmed_configuration_is_the_best_trial_with_its_fresh_seed_mean():
    spec = ExperimentSpec().replace(n_trials=2, confirm_seeds=2)
    confirmed = [configuration(1, 5.0, [4.5, 4.7])]
    choice = choose._on_trials(spec, _study([4.0, 5.0]), None, confirmed)
    assert choice.chosen.number == 1 and choice.separated is None
    assert choice.line.endswith("one seed each; untested against the runner-up (cider has no per-image scores); "
                                "over 2 fresh seeds: 4.6000 ± 0.1414")
    assert choose._on_trials(spec, _study([5.0]), None, []).line.endswith("of 1 trial, one seed each; no runner-up "
                                                                         "to compare with")
