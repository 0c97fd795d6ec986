"""One trial: build a Seq2Seq-style Trainer from a spec, fine-tune, evaluate by generation, log to MLflow."""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import torch
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from . import distributed, tracking
from .callbacks import CaptionMetricsCallback, EpochListener
from .data.collator import IGNORE_INDEX, SKIP_KEYS, CaptionCollator
from .data.features import PixelRows, Rows, SkipTally, evaluation_dataset, fits_in_memory, training_dataset
from .data.images import BadImage
from .data.sources import CaptionData, Example
from .feature_cache import FeatureCache, PassThroughVision
from .metrics import DocumentFrequency, caption_scores, corpus_document_frequency, resolve_cider_df
from .modeling import load_model_and_processor
from .spec import ExperimentSpec


@dataclass
class TrialResult:
    run_id: str
    objective: float  # the spec's objective at the best epoch
    best_epoch: int
    val_metrics: dict[str, float]  # at the best epoch
    test_metrics: dict[str, float]  # the best model on the test split (empty without one)
    untrained: dict[str, float]  # validation metrics before training
    history: list[dict[str, float]] = field(default_factory=list)
    model_dir: Path | None = None  # model + processor, loadable with from_pretrained


class CaptionTrainer(Seq2SeqTrainer):
    """Evaluation loss is teacher-forced on the first reference; captions are generated from the image alone."""

    def __init__(self, *args, generation_kwargs: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.generation_kwargs = generation_kwargs
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

    def get_eval_dataloader(self, eval_dataset=None):
        if eval_dataset is None or eval_dataset is self.eval_dataset:
            return super().get_eval_dataloader(eval_dataset)
        # Another split (the final full validation, the test): with persistent workers transformers would hand
        # back its cached per-epoch loader whatever dataset is passed. A one-off loader of its own instead.
        persistent = self.args.dataloader_persistent_workers
        self.args.dataloader_persistent_workers = False
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.args.dataloader_persistent_workers = persistent

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        inputs = self._count_skips(self._prepare_inputs(inputs), self.eval_split)
        with torch.no_grad():
            loss = None  # a batch of unusable images only has no loss (every label masked)
            if (inputs["labels"] != IGNORE_INDEX).any():
                with self.compute_loss_context_manager():
                    loss = model(**inputs).loss.detach()
            if prediction_loss_only:
                return loss, None, None
            # Seq2SeqTrainer would pass every input to generate(); for BLIP that feeds the reference caption
            # in as a prompt. Only the pixels go in.
            generated = self.accelerator.unwrap_model(model).generate(
                pixel_values=inputs["pixel_values"], **self.generation_kwargs
            )
        return loss, generated, inputs["labels"]


class _BarOnly(ProgressCallback):
    """Keep the progress bar; our callback prints one line per epoch instead of raw log dicts."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def resolve_precision(precision: str) -> str:
    """'auto': bf16 on GPUs that have it, else fp16 on GPUs; fp32 on CPU. On our 2-core AVX-512 CPU,
    `python -m blipexp.bench_precision` measured fp32 at 228-258 samples/s and bf16 autocast at 20 (2026-11-23);
    DESIGN.md found no bf16 gain for BLIP-base on it either."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def training_arguments(spec: ExperimentSpec, output_dir: Path, steps_per_epoch: int, echo: bool,
                       evaluate_untrained: bool = True, workers: int = 0) -> Seq2SeqTrainingArguments:
    precision = resolve_precision(spec.precision)
    return Seq2SeqTrainingArguments(
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
        seed=spec.seed,
        data_seed=spec.seed,
        eval_strategy="epoch",
        eval_on_start=evaluate_untrained,  # the untrained model's scores: the baseline every epoch is compared with
        save_strategy="epoch",
        save_total_limit=1,
        save_only_model=True,
        load_best_model_at_end=True,
        metric_for_best_model=f"eval_{spec.objective_metric}",
        greater_is_better=spec.greater_is_better,
        logging_strategy="steps",
        logging_steps=max(1, steps_per_epoch // 4),
        predict_with_generate=True,
        report_to="none",  # MLflow logging is ours (CaptionMetricsCallback), inside runs we manage
        remove_unused_columns=False,  # items carry the raw caption the collator tokenizes
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0,  # not started anew for every epoch and evaluation
        dataloader_pin_memory=torch.cuda.is_available(),
        # several processes without a GPU: DDP on CPU (gloo); without this the Trainer takes each for a world of one
        use_cpu=distributed.world_size() > 1 and not torch.cuda.is_available(),
        disable_tqdm=not echo,
    )


def compute_metrics_for(tokenizer, references: list[list[str]], document_frequency: DocumentFrequency | None = None):
    def compute_metrics(eval_pred) -> dict[str, float]:
        predictions = decode(tokenizer, eval_pred.predictions)
        assert len(predictions) == len(references), (f"{len(predictions)} predictions for {len(references)} "
                                                     "references: evaluation order must match them")
        # an image found unusable while evaluating has every label masked: it is left out of the scores
        usable = (np.asarray(eval_pred.label_ids) != IGNORE_INDEX).any(axis=1)
        kept = [i for i, ok in enumerate(usable) if ok]
        return caption_scores([predictions[i] for i in kept], [references[i] for i in kept], document_frequency)

    return compute_metrics


def decode(tokenizer, token_ids) -> list[str]:
    ids = np.where(np.asarray(token_ids) == IGNORE_INDEX, tokenizer.pad_token_id, token_ids)
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def train_trial(
    spec: ExperimentSpec,
    data: CaptionData,
    home: Path,
    *,
    run_name: str | None = None,
    listeners: Sequence[EpochListener] = (),
    extra_tags: dict[str, str] | None = None,
    nested: bool = False,
    echo: bool = True,
    untrained: dict[str, float] | None = None,
) -> TrialResult:
    """Fine-tune once as the spec says, inside one MLflow run; return the best epoch's metrics and model folder.

    `untrained`: the initial model's validation metrics when already known (see `untrained_key`); they are
    logged as epoch 0 instead of evaluating again.
    """
    captions = [c for example in data.train for c in example.captions]
    model, processor = load_model_and_processor(spec, captions)
    if spec.freeze_vision_encoder:
        model.vision_model.requires_grad_(False)
    cache = _feature_cache(spec, data, home, model, processor, echo)
    workers = dataloader_workers(spec, data, processor, cached=cache is not None)
    rows = cache.rows if cache else _pixel_rows(data, processor, memo=workers == 0)
    train_set = training_dataset(rows("train", data.train), data.train)
    epoch_val = validation_subset(data.validation, spec)
    subset = len(epoch_val) < len(data.validation)
    val_set, val_refs = evaluation_dataset(rows("validation_subset" if subset else "validation", epoch_val), epoch_val)
    if cache and echo:
        print(cache_summary(cache), flush=True)
    document_frequency = cider_document_frequency(spec, data, len(epoch_val), echo)
    collator = CaptionCollator(processor.tokenizer, model.config.text_config.bos_token_id, spec.max_caption_tokens)
    steps_per_epoch = math.ceil(len(train_set) / (spec.train_batch_size * spec.gradient_accumulation_steps))
    metrics_callback = CaptionMetricsCallback(spec.epochs, listeners=list(listeners), echo=echo)
    tags = {**tracking.run_tags(spec, data.fingerprint), **(extra_tags or {})}
    main = distributed.is_main_process()  # under `accelerate launch` every rank trains; only the main one logs

    with tracking.start_run(spec, run_name=run_name or spec.name, tags=tags, nested=nested) as run:
        if main:
            _log_data_summary(data, len(train_set), len(epoch_val))
        output_dir = home / "checkpoints" / run.info.run_id
        trainer = CaptionTrainer(
            model=model,
            args=training_arguments(spec, output_dir, steps_per_epoch, echo, evaluate_untrained=untrained is None,
                                    workers=workers),
            train_dataset=train_set,
            eval_dataset=val_set,
            data_collator=collator,
            compute_metrics=compute_metrics_for(processor.tokenizer, val_refs, document_frequency),
            callbacks=[metrics_callback],
            generation_kwargs={"max_new_tokens": spec.max_new_tokens, "num_beams": spec.num_beams},
        )
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)  # added instead of the bar when echo is off: it prints raw log dicts
        if main:
            mlflow.log_param("world_size", trainer.args.world_size)  # processes training this run together (DDP)
        if echo:
            trainer.add_callback(_BarOnly())
        if main:
            mlflow.log_param("untrained_scores", "evaluated" if untrained is None else "reused")
            mlflow.log_param("cider_df_used", "corpus" if document_frequency else "split")
        if untrained is not None:
            metrics_callback.record(0, dict(untrained))
        with _vision_inputs(model, cached=cache is not None):
            trainer.train()  # ends with the best epoch's weights loaded
            history = metrics_callback.history
            untrained = next((h for h in history if h["epoch"] == 0), {})
            best = _best_epoch(history, spec)
            full_val = {}
            if subset:  # epochs saw a subset: score the chosen model on all of it
                full_val = _evaluate(trainer, processor, rows, data.validation, "validation", document_frequency)
            test_metrics = _evaluate(trainer, processor, rows, data.test, "test", document_frequency)
        model_dir = output_dir / "model"
        trainer.save_model(str(model_dir))  # written by the main process only
        subset_best = {k: v for k, v in best.items() if k != "epoch"}
        val_metrics = full_val or subset_best
        objective = val_metrics[spec.objective_metric]
        if main:
            if cache:
                _log_cache(cache)
            processor.save_pretrained(str(model_dir))
            _drop_checkpoints(output_dir)  # the best weights now live in model_dir
            _log_samples(trainer.model, processor, data, spec)
            _log_skips(trainer.skips, echo)
            mlflow.log_metrics({
                "objective": objective,
                "best_epoch": best["epoch"],
                "train_steps": trainer.state.global_step,  # optimizer steps: fewer per epoch with more processes
                **{f"best_val_{k}": v for k, v in val_metrics.items()},
                **({f"best_val_subset_{k}": v for k, v in subset_best.items()} if full_val else {}),
                **{f"untrained_val_{k}": v for k, v in untrained.items() if k != "epoch"},
                **{f"test_{k}": v for k, v in test_metrics.items()},
            })
    return TrialResult(
        run_id=run.info.run_id,
        objective=objective,
        best_epoch=int(best["epoch"]),
        val_metrics=val_metrics,
        test_metrics=test_metrics,
        untrained={k: v for k, v in untrained.items() if k != "epoch"},
        history=history,
        model_dir=model_dir,
    )


# Fields that change training but not the model before it: trials differing only in these share epoch 0.
TRAINING_ONLY = frozenset({
    "learning_rate", "epochs", "train_batch_size", "gradient_accumulation_steps", "weight_decay", "warmup_ratio",
    "lr_scheduler", "max_grad_norm", "freeze_vision_encoder", "cache_vision_features", "dataloader_workers",
    "sample_captions", "n_trials", "prune", "registered_model", "mlflow_experiment",
})


def untrained_key(spec: ExperimentSpec, fingerprint: str) -> str:
    """Identifies the untrained model's validation scores: equal keys, equal scores (same weights, data, decoding)."""
    relevant = {k: v for k, v in spec.to_dict().items() if k not in TRAINING_ONLY}
    return hashlib.sha256(json.dumps([relevant, fingerprint], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _best_epoch(history: list[dict[str, float]], spec: ExperimentSpec) -> dict[str, float]:
    trained = [h for h in history if h["epoch"] >= 1]
    assert trained, "training ran no evaluation"
    pick = max if spec.greater_is_better else min
    return pick(trained, key=lambda h: h[spec.objective_metric])


RowsFor = Callable[[str, Sequence[Example]], Rows]  # (split name, examples) -> one input row per example


def _pixel_rows(data: CaptionData, processor, memo: bool) -> RowsFor:
    def rows(split: str, examples: Sequence[Example]) -> Rows:
        keep = memo and fits_in_memory(len(examples), processor.image_processor)
        return PixelRows(data, examples, processor.image_processor, memo=keep)

    return rows


def dataloader_workers(spec: ExperimentSpec, data: CaptionData, processor, cached: bool) -> int:
    """The spec's number, or for "auto" (-1): none when decoding is not the work (cached features, or pixels
    small enough to keep after the first epoch), else one process per core but one, up to 4."""
    if spec.dataloader_workers >= 0:
        return spec.dataloader_workers
    if cached or fits_in_memory(len(data.train), processor.image_processor):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores - 1))


def _feature_cache(spec: ExperimentSpec, data: CaptionData, home: Path, model, processor,
                   echo: bool) -> FeatureCache | None:
    if not (spec.freeze_vision_encoder and spec.cache_vision_features):
        return None
    return FeatureCache(home / "cache" / "vision", model, processor.image_processor, data, model_name=spec.model,
                        revision=spec.model_revision, workers=max(0, spec.dataloader_workers), progress=echo)


def cache_summary(cache: FeatureCache) -> str:
    parts = [f"{r.split} {'hit' if r.hit else 'computed'} {r.megabytes:.1f} MB ({r.seconds:.1f}s)" for r in cache.reports]
    return f"vision features (frozen encoder, cached in {cache.root}): " + ", ".join(parts)


@contextmanager
def _vision_inputs(model, cached: bool) -> Iterator[None]:
    """With cached features the batches carry encoder outputs: the vision model steps aside while they are used."""
    if not cached:
        yield
        return
    vision = model.vision_model
    model.vision_model = PassThroughVision()
    try:
        yield
    finally:
        model.vision_model = vision


def validation_subset(examples: list[Example], spec: ExperimentSpec) -> list[Example]:
    """The images scored every epoch: all of them, or a fixed random subset of `val_subset` (same every epoch)."""
    if not spec.val_subset or len(examples) <= spec.val_subset:
        return examples
    chosen = sorted(random.Random(spec.split_seed).sample(range(len(examples)), spec.val_subset))
    return [examples[i] for i in chosen]


def _evaluate(trainer: CaptionTrainer, processor, rows: RowsFor, examples: list[Example], split: str,
              document_frequency: DocumentFrequency | None) -> dict[str, float]:
    """The current (best) model's metrics on a whole split."""
    if not examples:
        return {}
    dataset, refs = evaluation_dataset(rows(split, examples), examples)
    trainer.compute_metrics = compute_metrics_for(processor.tokenizer, refs, document_frequency)
    trainer.eval_split = split
    metrics = trainer.evaluate(eval_dataset=dataset, metric_key_prefix=split)
    return {k[len(split) + 1:]: float(v) for k, v in metrics.items()
            if k.startswith(f"{split}_") and not k.endswith(("_runtime", "_per_second"))}


def cider_document_frequency(spec: ExperimentSpec, data: CaptionData, n_scored: int,
                             echo: bool) -> DocumentFrequency | None:
    """CIDEr's idf from the training + validation references when the scored set is too small for its own
    (cider_df; one image would score every model 0), else None: pycocoevalcap's own, from the scored set."""
    if resolve_cider_df(spec.cider_df, n_scored) == "split":
        return None
    corpus = [list(e.captions) for e in data.train + data.validation]
    if echo:
        print(f"CIDEr: idf from the references of {len(corpus)} training + validation images (cider_df="
              f"{spec.cider_df}; {n_scored} scored image(s) are too few for their own). cider_coco keeps "
              "pycocoevalcap's value.", flush=True)
    return corpus_document_frequency(corpus)


def _drop_checkpoints(output_dir: Path) -> None:
    for checkpoint in output_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


def _log_data_summary(data: CaptionData, train_pairs: int, epoch_val_images: int) -> None:
    mlflow.log_params({
        "data_source": data.source,
        "data_train_images": len(data.train),
        "data_train_pairs": train_pairs,
        "data_val_images": len(data.validation),
        "data_val_images_per_epoch": epoch_val_images,
        "data_test_images": len(data.test),
    })
    mlflow.log_metrics({"data_total_samples": data.total,
                        **{f"data_skipped_{reason}": n for reason, n in sorted(data.skipped.items())}})
    if data.warnings:
        mlflow.set_tag("data_warnings", " | ".join(data.warnings))


def _log_skips(skips: SkipTally, echo: bool) -> None:
    """Images that were fine at the first look but not when read for training or evaluation."""
    counts = skips.counts()
    if not counts:
        return
    mlflow.log_metrics({f"data_skipped_during_run_{reason}": n for reason, n in sorted(counts.items())})
    if echo:
        listed = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))
        print(f"  skipped while training/evaluating (changed since the first look): {listed}", flush=True)


def _log_cache(cache: FeatureCache) -> None:
    mlflow.log_params({f"vision_cache_{r.split}": "hit" if r.hit else "computed" for r in cache.reports})
    mlflow.log_metrics({"vision_cache_mb": sum(r.megabytes for r in cache.reports),
                        "vision_cache_seconds": sum(r.seconds for r in cache.reports)})


def _log_samples(model, processor, data: CaptionData, spec: ExperimentSpec) -> None:
    """A table of validation images with the best model's caption next to the references."""
    shown = []
    for example in data.validation:
        if len(shown) == spec.sample_captions:
            break
        try:
            shown.append((example, data.image(example)))
        except BadImage:  # unusable since the first look: counted by the evaluation, not shown
            continue
    if not shown:
        return
    pixels = processor.image_processor(images=[image for _, image in shown], return_tensors="pt")["pixel_values"]
    model.eval()
    with torch.no_grad():
        ids = model.generate(pixel_values=pixels.to(model.device), max_new_tokens=spec.max_new_tokens,
                             num_beams=spec.num_beams)
    mlflow.log_table(
        data={
            "image": [image for _, image in shown],
            "key": [e.key for e, _ in shown],
            "prediction": decode(processor.tokenizer, ids.cpu()),
            "references": [" | ".join(e.captions) for e, _ in shown],
        },
        artifact_file="val_samples.json",
    )
