"""The HF Trainer as blipexp builds it: arguments from a spec, precision, workers, and the console callbacks."""
import logging

import pytest
import safetensors.torch
import torch
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from blipexp.experiment.spec import ExperimentSpec
from blipexp.model import generation
from blipexp.model.tiny import build_tiny_model, build_tiny_processor
from blipexp.runtime import progress
from blipexp.training.callbacks import CaptionMetricsCallback
from blipexp.training.trainer import CaptionTrainer, build_trainer, training_arguments


def tiny_spec() -> ExperimentSpec:
    """The tiny profile in a resolved precision, as training_arguments gets it (precision.choose resolves auto)."""
    return ExperimentSpec().tiny().replace(precision="fp32")


def test_auto_precision_is_resolved_before_the_arguments_are_built(tmp_path):
    """precision=auto has one home, blipexp.precision (a probe on CPU): the Trainer's arguments take what it chose."""
    with pytest.raises(AssertionError, match="precision=auto is resolved by blipexp.precision"):
        training_arguments(ExperimentSpec().tiny(), tmp_path, steps_per_epoch=4, echo=False)


def test_training_arguments_follow_the_spec(tmp_path):
    spec = tiny_spec().replace(learning_rate=3e-4, epochs=5, objective_metric="loss")
    args = training_arguments(spec, tmp_path, steps_per_epoch=10, echo=False, evaluate_untrained=False, workers=2)
    assert (args.learning_rate, args.num_train_epochs, args.seed) == (3e-4, 5, spec.seed)
    assert args.metric_for_best_model == "eval_loss" and args.greater_is_better is False, "a loss is minimised"
    assert args.eval_on_start is False, "known untrained scores are not evaluated again"
    assert args.logging_steps == 2, "four training-loss points per epoch"
    assert args.dataloader_num_workers == 2 and args.dataloader_persistent_workers
    assert args.report_to == [] and args.disable_tqdm, "MLflow logging is ours; no bar without echo"


def test_memory_switches_and_the_pass_through_reach_the_training_arguments(tmp_path):
    spec = tiny_spec().with_overrides(["gradient_checkpointing=true", "torch_compile=true",
                                       "trainer.label_smoothing_factor=0.1", "trainer.optim=adamw_torch"])
    args = training_arguments(spec, tmp_path, steps_per_epoch=10, echo=False)
    assert args.activation_checkpointing and args.gradient_checkpointing and args.torch_compile
    assert args.label_smoothing_factor == 0.1 and args.optim == "adamw_torch", "the pass-through replaces a default"
    plain = training_arguments(tiny_spec(), tmp_path, steps_per_epoch=10, echo=False)
    assert not plain.activation_checkpointing and not plain.torch_compile and plain.label_smoothing_factor == 0.0


@pytest.mark.parametrize("echo, terminal", [(True, True), (True, False), (False, True)])
def test_the_console_shows_the_bar_on_a_terminal_and_the_epoch_lines_only(tmp_path, monkeypatch, echo, terminal):
    """Outside a terminal (a log file, a pipe) no bar: each of its redraws would be a line there."""
    monkeypatch.setattr(progress, "on_terminal", lambda: terminal)
    spec = tiny_spec().replace(max_new_tokens=7, num_beams=2)
    processor = build_tiny_processor(["a red player"])
    callback = CaptionMetricsCallback(spec.epochs, echo=echo)
    args = training_arguments(spec, tmp_path, steps_per_epoch=4, echo=echo)
    assert args.disable_tqdm == (not (echo and terminal))
    trainer = build_trainer(spec, args,
                            model=build_tiny_model(processor, seed=0), train_set=None, val_set=["not read"], collator=None,
                            compute_metrics=None, callbacks=[callback], echo=echo)
    assert isinstance(trainer, CaptionTrainer)
    assert trainer.generation_kwargs == generation.settings(spec), "evaluation generates as the served model does"
    assert (trainer.generation_kwargs["max_new_tokens"], trainer.generation_kwargs["num_beams"]) == (7, 2)
    callbacks = trainer.callback_handler.callbacks
    assert callback in callbacks
    assert not any(isinstance(c, PrinterCallback) for c in callbacks), "raw log dicts are never printed"
    bars = [c for c in callbacks if isinstance(c, ProgressCallback)]
    assert len(bars) == int(echo and terminal)


def test_bf16_without_a_gpu_builds_arguments_for_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = tiny_spec()
    args = training_arguments(spec.replace(precision="bf16"), tmp_path, steps_per_epoch=4, echo=False)
    assert args.bf16 and args.use_cpu, "transformers refuses bf16 without a GPU unless use_cpu is set"
    fp32 = training_arguments(spec.replace(precision="fp32"), tmp_path, steps_per_epoch=4, echo=False)
    assert not fp32.bf16 and not fp32.use_cpu


def test_label_smoothing_is_applied_to_blips_shifted_targets(tmp_path):
    """The Trainer's own LabelSmoother compares BLIP's logits with unshifted labels: the loss must be the
    next-token cross-entropy, smoothed."""
    from blipexp.data.collator import CaptionCollator

    processor = build_tiny_processor(["a red player dribbles the ball", "two blue players"])
    model = build_tiny_model(processor, seed=0)
    spec = tiny_spec().with_overrides(["trainer.label_smoothing_factor=0.1"])
    collator = CaptionCollator(processor.tokenizer, processor.tokenizer.bos_token_id, 24)
    trainer = build_trainer(spec, training_arguments(spec, tmp_path, steps_per_epoch=4, echo=False), model=model,
                            train_set=None, val_set=["not read"], collator=collator, compute_metrics=None,
                            callbacks=[], echo=False)
    batch = collator([{"pixel_values": torch.rand(3, 64, 64), "caption": c}
                      for c in ("a red player dribbles the ball", "two blue players")])
    loss = trainer.compute_loss(model, batch)
    logits = model(**{k: batch[k] for k in ("pixel_values", "input_ids", "attention_mask")}).logits
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 batch["labels"][:, 1:].reshape(-1), label_smoothing=0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_loading_the_best_checkpoint_warns_of_really_missing_keys_only(tmp_path):
    """BLIP's tied decoder weights are not stored in a checkpoint: loading it must not call them missing (noise);
    a key that is really missing still warns."""
    spec = tiny_spec()
    processor = build_tiny_processor(["a red player"])
    trainer = build_trainer(spec, training_arguments(spec, tmp_path, steps_per_epoch=4, echo=False),
                            model=build_tiny_model(processor, seed=0), train_set=None, val_set=["not read"],
                            collator=None, compute_metrics=None, callbacks=[], echo=False)
    trainer.model.save_pretrained(tmp_path / "checkpoint")  # as the Trainer saves one: tied weights once
    state = safetensors.torch.load_file(tmp_path / "checkpoint" / "model.safetensors")
    records = _Records()
    logger = logging.getLogger("transformers.trainer")
    logger.addHandler(records)
    try:
        loaded = trainer.model.load_state_dict(state, strict=False)  # what Trainer._load_best_model does
        assert loaded.missing_keys, "the tied decoder weights are reported missing by torch"
        trainer._issue_warnings_after_load(loaded)
        assert records.messages == []
        del state["text_decoder.bert.embeddings.word_embeddings.weight"]  # a real gap in the checkpoint
        trainer._issue_warnings_after_load(trainer.model.load_state_dict(state, strict=False))
    finally:
        logger.removeHandler(records)
    assert len(records.messages) == 1 and "word_embeddings.weight" in records.messages[0]
    assert "decoder.weight" not in records.messages[0]
