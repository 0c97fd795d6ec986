"""The `trainer` pass-through, checked against the installed transformers' Seq2SeqTrainingArguments."""
import pytest

from blipexp.experiment import trainer_args
from blipexp.experiment.search_space import Choice
from blipexp.experiment.spec import ExperimentSpec
from blipexp.training.trainer import training_arguments


@pytest.mark.parametrize("name, raw, value", [
    ("label_smoothing_factor", "0.1", 0.1),  # float
    ("eval_steps", "none", None), ("eval_steps", "0.5", 0.5),  # float | None
    ("optim", "adafactor", "adafactor"),  # OptimizerNames | str: the plain name
    ("lr_scheduler_kwargs", '{"power": 2}', {"power": 2}),  # dict | str | None
    ("skip_memory_metrics", "false", False),  # bool
    ("torch_compile_mode", "max-autotune", "max-autotune"),  # str | None
])
def test_text_is_parsed_to_the_installed_fields_type(name, raw, value):
    assert trainer_args.parse(name, raw) == value


@pytest.mark.parametrize("name, raw, message", [
    ("label_smothing_factor", "0.1", "not a Seq2SeqTrainingArguments field: did you mean label_smoothing_factor"),
    ("label_smoothing_factor", "lots", "cannot set trainer.label_smoothing_factor='lots': expected float"),
    ("optim", "adamw_typo", "expected one of adamw_torch, .*adafactor"),
    ("learning_rate", "1e-3", "set by the spec: use the spec field learning_rate"),
    ("num_train_epochs", "3", "use the spec field epochs"),
    ("bf16", "true", "use the spec field precision"),
    ("per_device_train_batch_size", "4", "use the spec field train_batch_size"),
    ("activation_checkpointing", "true", "use the spec field gradient_checkpointing"),
    ("eval_strategy", "steps", "set by blipexp and cannot be passed through: evaluation runs once per epoch"),
])
def test_bad_names_and_values_say_what_to_do(name, raw, message):
    with pytest.raises(ValueError, match=message):
        trainer_args.parse(name, raw)


def test_typed_values_from_an_experiment_file_are_checked():
    assert trainer_args.check({"label_smoothing_factor": 0.1, "eval_steps": None}) == {
        "label_smoothing_factor": 0.1, "eval_steps": None}
    assert trainer_args.check({"label_smoothing_factor": "0.2"}) == {"label_smoothing_factor": 0.2}
    with pytest.raises(ValueError, match=r"trainer.label_smoothing_factor=True has the wrong type: expected float"):
        trainer_args.check({"label_smoothing_factor": True})


def test_every_argument_blipexp_sets_is_refused_as_a_pass_through(tmp_path, monkeypatch):
    """A name training_arguments sets would be silently replaced by the pass-through: each must be refused
    (optim, blipexp's default optimizer, is the one meant to be overridable)."""
    seen = {}
    monkeypatch.setattr("blipexp.training.trainer.Seq2SeqTrainingArguments", lambda **kwargs: seen.update(kwargs))
    training_arguments(ExperimentSpec().tiny().replace(precision="fp32"), tmp_path, steps_per_epoch=4, echo=False)
    unguarded = set(seen) - set(trainer_args.SPEC_OWNED) - set(trainer_args.MANAGED) - {"optim"}
    assert not unguarded
    assert set(trainer_args.SPEC_OWNED) | set(trainer_args.MANAGED) <= set(trainer_args._hints()), "real names"


def test_the_refusals_say_what_blipexp_does_with_checkpoints(tmp_path):
    """A single run's checkpoints resume it (optimizer state saved); the best and the latest are kept while training."""
    args = training_arguments(ExperimentSpec().tiny().replace(precision="fp32"), tmp_path, steps_per_epoch=4, echo=False, resumable=True)
    assert (args.save_only_model, args.save_total_limit, args.load_best_model_at_end) == (False, 1, True)
    with pytest.raises(ValueError, match="a single run's checkpoints hold the optimizer, scheduler and RNG state"):
        trainer_args.check_name("save_only_model")
    with pytest.raises(ValueError, match="the best and the latest epoch's checkpoints are kept while training"):
        trainer_args.check_name("save_total_limit")


SECRET = "hf_planted0123456789"


class WithToken(ExperimentSpec):
    trainer = {"hub_token": SECRET}


class SearchingTokens(ExperimentSpec):
    def search_space(self):
        return {"trainer.hub_token": Choice((SECRET, "other"))}


def test_a_field_holding_a_secret_is_refused_from_every_door_naming_the_environment_variable():
    """--set, an experiment file's `trainer` and a search space key: refused before the value is kept anywhere, with
    a message naming $HF_TOKEN and not the value. Fields about tokens that hold none still pass."""
    refusals = {}
    for door in (lambda: ExperimentSpec().with_overrides([f"trainer.hub_token={SECRET}"]),
                 lambda: WithToken(),
                 lambda: SearchingTokens(),
                 lambda: trainer_args.check({"hub_token": SECRET}),
                 lambda: trainer_args.parse("push_to_hub_token", SECRET),  # older transformers' name
                 lambda: trainer_args.parse("api_secret", SECRET),  # any name saying secret or password: no field
                 lambda: trainer_args.check_name("db_password")):
        with pytest.raises(ValueError) as refused:
            door()
        refusals[str(refused.value)] = refused.value
    for message in refusals:
        assert "would hold a secret" in message and "HF_TOKEN" in message and SECRET not in message, message
    assert trainer_args.parse("include_num_input_tokens_seen", "true") is True  # "tokens": no secret
