import pytest

from blipexp.spec import PITCH_DATASET, TINY_MODEL, Choice, ExperimentSpec, FloatRange, IntRange


class Child(ExperimentSpec):
    """Hypothesis: a child changes defaults with plain assignments."""

    learning_rate = 1e-3
    epochs = 3


def test_plain_assignments_become_field_defaults():
    spec = Child()
    assert (spec.learning_rate, spec.epochs) == (1e-3, 3)
    assert ExperimentSpec().learning_rate == 5e-5  # the parent is untouched
    assert spec.hypothesis == "a child changes defaults with plain assignments."


def test_typo_in_subclass_body_is_an_error_naming_the_field():
    with pytest.raises(ValueError, match="learnig_rate.*learning_rate"):
        class Typo(ExperimentSpec):
            learnig_rate = 1e-3


def test_overrides_parse_to_field_types():
    spec = ExperimentSpec().with_overrides(["learning_rate=1e-5", "epochs=7", "freeze_vision_encoder=true",
                                            "precision=bf16", "dataset=/data/x"])
    assert spec.learning_rate == 1e-5 and isinstance(spec.learning_rate, float)
    assert spec.epochs == 7 and spec.freeze_vision_encoder is True
    assert spec.precision == "bf16" and spec.dataset == "/data/x"


@pytest.mark.parametrize("override, message", [
    ("learnin_rate=1", "unknown spec field 'learnin_rate'.*learning_rate"),
    ("epochs=2.5", "cannot set epochs='2.5'"),
    ("epochs=many", "cannot set epochs"),
    ("freeze_vision_encoder=maybe", "expected true or false"),
    ("precision=fp8", "one of auto, fp32, bf16, fp16"),
    ("learning_rate", "not key=value"),
])
def test_bad_overrides_raise_helpful_errors(override, message):
    with pytest.raises(ValueError, match=message):
        ExperimentSpec().with_overrides([override])


@pytest.mark.parametrize("changes, message", [
    ({"learning_rate": 0.0}, "learning_rate=0.0 must be > 0"),
    ({"epochs": 0}, "epochs=0 must be >= 1"),
    ({"val_fraction": 0.6, "test_fraction": 0.5}, "must be < 1"),
    ({"val_fraction": 0.0}, "val_fraction=0.0 must be > 0"),
    ({"objective_metric": "meteor"}, "objective_metric='meteor' must be one of"),
    ({"epochs": "3"}, "wrong type"),
])
def test_validation_names_the_field_and_the_rule(changes, message):
    with pytest.raises(ValueError, match=message):
        ExperimentSpec().replace(**changes)


def test_tiny_profile_swaps_model_and_dataset_but_keeps_a_local_folder(tmp_path):
    tiny = ExperimentSpec().tiny()
    assert tiny.model == TINY_MODEL and tiny.dataset == PITCH_DATASET and tiny.is_tiny
    assert tiny.registered_model.endswith("-tiny")
    local = ExperimentSpec(dataset=str(tmp_path)).tiny()
    assert local.dataset == str(tmp_path) and local.model == TINY_MODEL


def test_search_space_must_name_fields_and_have_valid_ranges():
    class BadName(ExperimentSpec):
        def search_space(self):
            return {"learnin_rate": FloatRange(1e-5, 1e-3, log=True)}

    class BadRange(ExperimentSpec):
        def search_space(self):
            return {"epochs": IntRange(5, 2)}

    class Good(ExperimentSpec):
        def search_space(self):
            return {"learning_rate": FloatRange(1e-5, 1e-3, log=True), "num_beams": Choice((1, 3))}

    with pytest.raises(ValueError, match="did you mean learning_rate"):
        BadName()
    with pytest.raises(ValueError, match="needs low < high"):
        BadRange()
    assert set(Good().search_space()) == {"learning_rate", "num_beams"}


def test_hypothesis_drops_a_leading_label_once():
    class Twice(ExperimentSpec):
        """HYPOTHESIS:   hypothesis: is a word here.

        Details that are not part of it."""

    class Unlabelled(ExperimentSpec):
        """Smaller batches help."""

    assert Twice().hypothesis == "hypothesis: is a word here."
    assert Unlabelled().hypothesis == "Smaller batches help."


@pytest.mark.parametrize("metric, direction", [("loss", "minimize"), ("cider", "maximize"), ("bleu4", "maximize")])
def test_objective_direction_auto_follows_the_metric(metric, direction):
    spec = ExperimentSpec().with_overrides([f"objective_metric={metric}"])
    assert spec.objective_direction == "auto" and spec.direction == direction
    assert spec.greater_is_better == (direction == "maximize")
    assert spec.replace(objective_direction=direction).direction == direction  # stating it agrees


@pytest.mark.parametrize("metric, direction, fix", [("loss", "maximize", "minimize"), ("cider", "minimize", "maximize")])
def test_a_direction_that_contradicts_the_metric_is_an_error(metric, direction, fix):
    with pytest.raises(ValueError, match=rf"objective_direction='{direction}' contradicts objective_metric='{metric}'"
                                         rf".*objective_direction=auto \(or {fix}\)"):
        ExperimentSpec().with_overrides([f"objective_metric={metric}", f"objective_direction={direction}"])


@pytest.mark.parametrize("changes, message", [
    ({"early_stopping_patience": -1}, "early_stopping_patience=-1 must be >= 0"),
    ({"early_stopping_threshold": -0.1}, "early_stopping_threshold=-0.1 must be >= 0"),
])
def test_early_stopping_fields_are_validated(changes, message):
    with pytest.raises(ValueError, match=message):
        ExperimentSpec().replace(**changes)
    assert ExperimentSpec().with_overrides(["early_stopping_patience=2"]).early_stopping_patience == 2
