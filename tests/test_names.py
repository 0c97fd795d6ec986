"""Run names (tracking/names.py): the experiment, the role, the changed fields; the short id once the run exists."""
from pathlib import Path

import pytest

from blipexp.experiment import catalog
from blipexp.tracking import names

EXPERIMENTS = Path(__file__).parent.parent / "experiments"


def experiment(name: str):
    return catalog.load(name, EXPERIMENTS)


def test_runs_that_differ_only_by_seed_have_different_names():
    baseline = experiment("football_baseline").tiny()
    assert names.run_name(baseline) == "football_baseline", "the experiment's own values: nothing changed to name"
    assert names.run_name(baseline.replace(seed=7)) == "football_baseline · seed=7"
    assert names.run_name(baseline.replace(seed=8)) != names.run_name(baseline.replace(seed=7))


def test_a_trial_names_its_searched_fields_first_even_at_their_default():
    sweep = experiment("football_lr_sweep").tiny()
    trial = sweep.replace(learning_rate=2e-4, epochs=8)  # 8: the tiny profile's own epochs, named all the same
    assert names.run_name(trial, "trial 3", always=sweep.search_space()) == "football_lr_sweep · trial 3 · lr=2e-4 · 8 ep"
    confirm = trial.replace(seed=43, pitch_scenes=30)
    assert names.run_name(confirm, "confirm trial 3", always=sweep.search_space()) == \
        "football_lr_sweep · confirm trial 3 · lr=2e-4 · 8 ep · pitch_scenes=30 · seed=43"


def test_the_profile_closer_to_the_spec_is_its_base_and_fields_that_change_no_model_are_left_out():
    full = experiment("football_baseline")
    assert names.run_name(full.replace(learning_rate=1e-5)) == "football_baseline · lr=1e-5", "the full profile"
    quiet = full.tiny().replace(n_trials=3, confirm_seeds=2, registered_model="other", system_metrics=False)
    assert names.run_name(quiet) == "football_baseline"


def test_a_long_list_of_changes_is_counted_and_values_are_short():
    spec = experiment("football_baseline").tiny().replace(
        dataset="/data/photos/football", learning_rate=0.0123, max_grad_norm=0.5, weight_decay=0.1, seed=1,
        prompt="a photograph of the match in the rain", trainer={"label_smoothing_factor": 0.1})
    name = names.run_name(spec, "rerun of 1a2b3c")
    assert name == ("football_baseline · rerun of 1a2b3c · dataset=football · lr=0.0123 · weight_decay=0.1 · "
                    "max_grad_norm=0.5 · seed=1 · +2 more")


@pytest.mark.parametrize("value, shown", [(2e-4, "2e-4"), (5.6e-4, "5.6e-4"), (0.00123, "1.23e-3"), (0.05, "0.05"),
                                          (0.0, "0"), (12, "12"), (True, "True"), ("cosine", "cosine")])
def test_values_read_short(value, shown):
    assert names._value(value) == shown


def test_the_short_id_ends_the_name_and_keeps_it_within_mlflows_limit():
    assert names.with_short_id("football_baseline · seed=7", "9b07de1234") == "football_baseline · seed=7 · 9b07de"
    long = names.with_short_id("x" * 400, "9b07de1234")
    assert len(long) == names.MAX_LENGTH and long.endswith(" · 9b07de")
