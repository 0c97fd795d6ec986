"""Search spaces are checked when the spec is built: real field names, sane bounds, values of the field's type."""
import re

import pytest

from blipexp.experiment.search_space import Choice, FloatRange, IntRange, check_space
from blipexp.experiment.spec import ExperimentSpec


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


@pytest.mark.parametrize("dim, message", [
    (("epochs", FloatRange(2, 12)), "['epochs'] is a FloatRange, which suggests 2.0, but epochs takes int: use IntRange(2, 12)"),
    (("num_beams", Choice((1, 2.5))), "['num_beams'] is a Choice, which suggests 2.5, but num_beams takes int"),
    (("precision", Choice(("fp32", "fp64"))), "suggests 'fp64', but precision takes one of auto, fp32, bf16, fp16"),
    (("freeze_vision_encoder", IntRange(0, 1)), "suggests 0, but freeze_vision_encoder takes bool"),
])
def test_a_search_dimension_must_suggest_values_of_its_fields_type_when_the_spec_is_built(dim, message):
    class Mistyped(ExperimentSpec):
        def search_space(self):
            return dict([dim])

    with pytest.raises(ValueError, match=re.escape(message)):
        Mistyped()


def test_a_search_space_may_search_a_trainer_entry():
    class Smoothing(ExperimentSpec):
        def search_space(self):
            return {"trainer.label_smoothing_factor": FloatRange(0.0, 0.2)}

    class Owned(ExperimentSpec):
        def search_space(self):
            return {"trainer.num_train_epochs": IntRange(1, 3)}

    assert set(Smoothing().search_space()) == {"trainer.label_smoothing_factor"}
    with pytest.raises(ValueError, match="use the spec field epochs"):
        Owned()


@pytest.mark.parametrize("space, message", [
    ({"lr": FloatRange(0.0, 1e-3, log=True)}, "search_space['lr']=0.0 log scale needs low > 0"),
    ({"lr": Choice(())}, "search_space['lr']=() needs at least one option"),
    ({"lr": (1e-5, 1e-3)}, "search_space['lr'] is (1e-05, 0.001): use FloatRange, IntRange or Choice"),
])
def test_check_space_names_the_dimension_and_the_rule(space, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_space(space, {"lr": float})
    check_space({"lr": FloatRange(1e-5, 1e-3, log=True)}, {"lr": float})  # a good one passes
