
import pytest

from blipexp.experiment.spec import LORA_PATTERNS, PITCH_DATASET, TINY_MODEL, TINY_RANDOM_MODEL, ExperimentSpec


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
    ({"lora_r": 0}, "lora_r=0 must be >= 1"),
    ({"lora_alpha": 0}, "lora_alpha=0 must be >= 1"),
    ({"lora_dropout": 1.0}, r"lora_dropout=1.0 must be in \[0, 1\)"),
    ({"lora_targets": "decoder("}, "neither a preset .* nor a valid regular expression.*--set lora_targets=decoder"),
    ({"min_new_tokens": 31}, r"min_new_tokens=31 must be in \[0, max_new_tokens=30\]"),
    ({"repetition_penalty": 0.0}, "repetition_penalty=0.0 must be > 0"),
    ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size=-1 must be >= 0"),
    ({"prompt": "a photograph of "}, "prompt='a photograph of ' has spaces at an end: --set prompt='a photograph of'"),
    ({"trainer": {"learning_rate": 1e-3}}, "trainer.learning_rate is set by the spec: use the spec field learning_rate"),
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


def test_both_tiny_presets_are_the_tiny_profile():
    random_init = ExperimentSpec().tiny().replace(model=TINY_RANDOM_MODEL)
    assert random_init.is_tiny and random_init.profile == "tiny"
    assert not ExperimentSpec().is_tiny and ExperimentSpec().profile == "full"


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


def test_lora_fields_are_set_from_text_and_targets_resolve_to_a_pattern():
    spec = ExperimentSpec().with_overrides(["adapter=lora", "lora_r=16", "lora_targets=decoder+vision"])
    assert (spec.adapter, spec.lora_r) == ("lora", 16)
    assert spec.lora_pattern.startswith(LORA_PATTERNS["decoder"]) and "vision_model" in spec.lora_pattern
    assert spec.replace(lora_targets=r"text_decoder\..*\.query").lora_pattern == r"text_decoder\..*\.query"
    with pytest.raises(ValueError, match="one of none, lora"):
        ExperimentSpec().with_overrides(["adapter=qlora"])


def test_generation_and_memory_fields_take_overrides():
    spec = ExperimentSpec().with_overrides(["min_new_tokens=5", "length_penalty=0.8", "repetition_penalty=1.3",
                                            "no_repeat_ngram_size=3", "prompt=a photograph of",
                                            "gradient_checkpointing=true", "torch_compile=yes"])
    assert (spec.min_new_tokens, spec.length_penalty, spec.repetition_penalty) == (5, 0.8, 1.3)
    assert (spec.no_repeat_ngram_size, spec.prompt) == (3, "a photograph of")
    assert spec.gradient_checkpointing is True and spec.torch_compile is True


def test_trainer_entries_are_set_with_dotted_keys_and_logged_as_their_own_params():
    spec = ExperimentSpec().with_overrides(["trainer.label_smoothing_factor=0.1", "trainer.optim=adafactor"])
    assert spec.trainer == {"label_smoothing_factor": 0.1, "optim": "adafactor"}
    assert spec.value("trainer.label_smoothing_factor") == 0.1 and spec.value("trainer.eval_steps") is None
    params = spec.params()
    assert params["trainer.label_smoothing_factor"] == 0.1 and "trainer" not in params
    assert spec.replace(**{"trainer.label_smoothing_factor": 0.2}).trainer == {"label_smoothing_factor": 0.2,
                                                                              "optim": "adafactor"}
    assert ExperimentSpec().trainer == {}, "the override did not leak into the defaults"
    with pytest.raises(ValueError, match="did you mean label_smoothing_factor"):
        ExperimentSpec().with_overrides(["trainer.label_smoothing=0.1"])


@pytest.mark.parametrize("changes, message", [
    ({"early_stopping_patience": -1}, "early_stopping_patience=-1 must be >= 0"),
    ({"early_stopping_threshold": -0.1}, "early_stopping_threshold=-0.1 must be >= 0"),
])
def test_early_stopping_fields_are_validated(changes, message):
    with pytest.raises(ValueError, match=message):
        ExperimentSpec().replace(**changes)
    assert ExperimentSpec().with_overrides(["early_stopping_patience=2"]).early_stopping_patience == 2
