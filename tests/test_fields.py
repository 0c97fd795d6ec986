"""Spec fields: text parsed to a field's type, type checks, and parent + diff subclasses."""
from typing import Literal

import pytest

from blipexp.experiment.fields import matches, parse, type_name
from blipexp.experiment.spec import ExperimentSpec


@pytest.mark.parametrize("hint, raw, value", [
    (float, "1e-4", 1e-4), (int, "8", 8), (bool, "yes", True), (bool, "0", False), (str, "pitch", "pitch"),
    (Literal["auto", "own"], "own", "own"),
])
def test_text_is_parsed_to_the_fields_type(hint, raw, value):
    assert parse("key", raw, hint) == value


@pytest.mark.parametrize("hint, raw, message", [
    (int, "1.5", r"cannot set key='1.5'.*\(int\)"), (bool, "maybe", "expected true or false"),
    (Literal["auto", "own"], "mine", "one of auto, own"),
])
def test_bad_text_names_the_key_and_the_type(hint, raw, message):
    with pytest.raises(ValueError, match=message):
        parse("key", raw, hint)


def test_types_are_checked_strictly():
    assert matches(3, float) and not matches(True, int) and not matches(3.0, int)
    assert type_name(Literal["a", "b"]) == "one of a, b"


def test_a_subclass_typo_is_an_error_with_the_close_names():
    with pytest.raises(ValueError, match="learnig_rate is not a spec field: did you mean learning_rate"):
        type("Typo", (ExperimentSpec,), {"learnig_rate": 1e-4, "__module__": __name__})


def test_a_dict_default_in_a_subclass_is_copied_for_each_spec():
    """A plain `trainer = {...}` in an experiment file: dataclasses refuse a shared mutable default."""
    cls = type("WithTrainer", (ExperimentSpec,), {"trainer": {"label_smoothing_factor": 0.1}, "__module__": __name__})
    first, second = cls(), cls()
    assert first.trainer == {"label_smoothing_factor": 0.1}
    first.trainer["label_smoothing_factor"] = 0.3
    assert second.trainer == {"label_smoothing_factor": 0.1} and cls().trainer == {"label_smoothing_factor": 0.1}


def test_dict_fields_parse_json_objects_and_check_as_dicts():
    from typing import Any

    assert parse("trainer", '{"a": 1}', dict[str, Any]) == {"a": 1}
    with pytest.raises(ValueError, match="expected a JSON object"):
        parse("trainer", "[1]", dict[str, Any])
    assert matches({}, dict[str, Any]) and not matches([], dict[str, Any])
