"""The HF Trainer as blipexp runs it: CaptionTrainer, training arguments from a spec, precision, the progress bar."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from ..data.collator import IGNORE_INDEX, SKIP_KEYS
from ..data.features import SkipTally
from ..experiment.spec import ExperimentSpec
from ..model import generation
from ..runtime import distributed, interrupts, progress


class CaptionTrainer(Seq2SeqTrainer):
    """Evaluation loss is teacher-forced on the first reference; captions are generated from the image alone (and
    the spec's prompt), by generation.generate with `generation_kwargs` (generation.settings)."""

    def __init__(self, *args, generation_kwargs: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.generation_kwargs = generation_kwargs
        if self.label_smoother is not None:
            # trainer.label_smoothing_factor: the Trainer's LabelSmoother would score BLIP's logits against its labels
            # unshifted (BLIP is not in its causal-LM list), training each position to repeat its input. BLIP's
            # text decoder smooths its own, shifted loss: hand the factor to it.
            self.accelerator.unwrap_model(self.model).text_decoder.label_smoothing = self.args.label_smoothing_factor
            self.label_smoother = None
        self.skips = SkipTally()  # images found unusable by the DataLoader (see data.features)
        self.eval_split = "validation"  # which split an evaluation reads, for the tally

    def _count_skips(self, inputs: dict, dataset: str) -> dict:
        inputs = dict(inputs)
        bad_image, bad_reason = (inputs.pop(key) for key in SKIP_KEYS)
        self.skips.add(dataset, bad_image, bad_reason)
        return inputs

    def compute_loss(self, model, inputs, *args, **kwargs):
        return super().compute_loss(model, self._count_skips(inputs, "train"), *args, **kwargs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", **gen_kwargs):
        # Skips Seq2SeqTrainer.evaluate: it gathers predictions with `gather`, which under DDP keeps the samples
        # that pad the last batch (more predictions than references). Trainer's gather_for_metrics drops them;
        # generation settings are ours (prediction_step).
        return Trainer.evaluate(self, eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def _issue_warnings_after_load(self, load_result) -> None:  # private: tests/test_private_apis.py
        # Loading the best checkpoint at the end of training: BLIP's decoder weights are tied to its word
        # embeddings, so a checkpoint stores them once and transformers reports them "missing" though they are
        # loaded through the tensor they share. Only other missing keys are worth the warning.
        tied = set(getattr(self.model, "all_tied_weights_keys", None) or {})
        missing = [key for key in load_result.missing_keys if key not in tied]
        if len(missing) < len(load_result.missing_keys):
            self.model.tie_weights()
        super()._issue_warnings_after_load(type(load_result)(missing, load_result.unexpected_keys))

    def get_eval_dataloader(self, eval_dataset=None):
        if eval_dataset is None or eval_dataset is self.eval_dataset:
            return super().get_eval_dataloader(eval_dataset)
        # Another split (the final full validation, the test): with persistent workers transformers would hand
        # back its cached per-epoch loader whatever dataset is passed. A one-off loader of its own instead (what
        # transformers does here is checked by tests/test_private_apis.py).
        persistent = self.args.dataloader_persistent_workers
        self.args.dataloader_persistent_workers = False
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.args.dataloader_persistent_workers = persistent

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        interrupts.check(distributed.max_over_ranks)  # between evaluation batches: a safe point, the same for all ranks
        inputs = self._count_skips(self._prepare_inputs(inputs), self.eval_split)
        with torch.no_grad():
            loss = None  # a batch of unusable images only has no loss (every label masked)
            if (inputs["labels"] != IGNORE_INDEX).any():
                with self.compute_loss_context_manager():
                    loss = model(**inputs).loss.detach()
            if prediction_loss_only:
                return loss, None, None
            # Seq2SeqTrainer would pass every input to generate(); for BLIP that feeds the reference caption
            # in as a prompt. Only the pixels (and the spec's prompt) go in; the collator holds the tokenizer.
            generated = generation.generate(self.accelerator.unwrap_model(model), self.data_collator.tokenizer,
                                            inputs["pixel_values"], self.generation_kwargs)
        return loss, generated, inputs["labels"]


class StopAtSafePoints(TrainerCallback):
    """Ctrl-C or SIGTERM stop training at a step's end (interrupts.py), not inside the step; the ranks of a DDP run
    at the same step's (one may be signalled a step before another: it would wait for the others forever)."""

    def on_step_end(self, args, state, control, **kwargs):
        interrupts.check(distributed.max_over_ranks)


class _BarOnly(ProgressCallback):
    """Keep the progress bar; our callback prints one line per epoch instead of raw log dicts."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def build_trainer(spec: ExperimentSpec, args: Seq2SeqTrainingArguments, *, model, train_set, val_set, collator,
                  compute_metrics, callbacks: list[TrainerCallback], echo: bool) -> CaptionTrainer:
    """A CaptionTrainer generating as the spec says and reporting through `callbacks`: on the console only the
    progress bar (when echo, on a terminal) besides the callbacks' own lines (one per epoch)."""
    trainer = CaptionTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=collator,
        compute_metrics=compute_metrics,
        callbacks=[*callbacks, StopAtSafePoints()],
        generation_kwargs=generation.settings(spec),
    )
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)  # added instead of the bar when echo is off: it prints raw log dicts
    if echo and progress.on_terminal():  # elsewhere each redraw would be a line: the epoch lines say enough
        trainer.add_callback(_BarOnly())
    return trainer


def training_arguments(spec: ExperimentSpec, output_dir: Path, steps_per_epoch: int, echo: bool,
                       evaluate_untrained: bool = True, workers: int = 0,
                       resumable: bool = False) -> Seq2SeqTrainingArguments:
    """`resumable`: checkpoints also hold the optimizer, scheduler and RNG states a resumed run needs (about
    three times the model's size each; the best and the last epoch's are kept while training). The spec's precision
    is the one to train in: "auto" is resolved before (precision.choose, precision.used)."""
    precision = spec.precision
    assert precision != "auto", "precision=auto is resolved by blipexp.precision before the Trainer is built"
    arguments = dict(
        output_dir=str(output_dir),
        learning_rate=spec.learning_rate,
        num_train_epochs=spec.epochs,
        per_device_train_batch_size=spec.train_batch_size,
        per_device_eval_batch_size=spec.eval_batch_size,
        gradient_accumulation_steps=spec.gradient_accumulation_steps,
        weight_decay=spec.weight_decay,
        optim="adamw_torch_fused",  # one kernel for all parameters; torch has it on CPU and GPU
        warmup_steps=spec.warmup_ratio,  # a float in [0, 1) is a share of all steps
        lr_scheduler_type=spec.lr_scheduler,
        max_grad_norm=spec.max_grad_norm,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=spec.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        torch_compile=spec.torch_compile,
        seed=spec.seed,
        data_seed=spec.seed,
        eval_strategy="epoch",
        eval_on_start=evaluate_untrained,  # the untrained model's scores: the baseline every epoch is compared with
        save_strategy="epoch",
        save_total_limit=1,
        save_only_model=not resumable,
        load_best_model_at_end=True,
        metric_for_best_model=f"eval_{spec.objective_metric}",
        greater_is_better=spec.greater_is_better,
        logging_strategy="steps",
        logging_steps=max(1, steps_per_epoch // 4),
        logging_nan_inf_filter=False,  # else a NaN step loss is logged as the running mean: divergence unseen
        predict_with_generate=True,
        report_to="none",  # MLflow logging is ours (CaptionMetricsCallback), inside runs we manage
        remove_unused_columns=False,  # items carry the raw caption the collator tokenizes
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0,  # not started anew for every epoch and evaluation
        dataloader_pin_memory=torch.cuda.is_available(),
        # several processes without a GPU: DDP on CPU (gloo); without this the Trainer takes each for a world of one.
        # bf16 without a GPU: transformers refuses bf16 unless told the CPU is meant
        use_cpu=(distributed.world_size() > 1 or precision == "bf16") and not torch.cuda.is_available(),
        disable_tqdm=not (echo and progress.on_terminal()),
    )
    # the spec's pass-through: fields it does not set itself (trainer_args refuses those it or blipexp sets)
    return Seq2SeqTrainingArguments(**{**arguments, **spec.trainer})
