"""One trial, as a short script of named steps: set up (model, adaptation, data sets, trainer), train and score
inside one MLflow run, then save the best model and log what the run found."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from . import distributed, precision, pretrain, tracking
from .callbacks import CaptionMetricsCallback, EarlyStopping, EpochListener
from .data.collator import CaptionCollator
from .data.features import PixelRows, Rows, SkipTally, evaluation_dataset, fits_in_memory, training_dataset
from .data.sources import CaptionData, Example
from .evaluation import (
    RowsFor,
    SampleCaptions,
    best_epoch,
    cider_document_frequency,
    compute_metrics_for,
    decode,
    evaluate_split,
    log_samples,
    validation_subset,
)
from .feature_cache import FeatureCache
from .modeling import (
    PreparedModel,
    adapter_dir,
    load_model_and_processor,
    no_weight_progress_bars,
    prepare_for_training,
)
from .resume import Resumable
from .spec import PITCH_DATASET, TINY_MODEL, ExperimentSpec
from .trainer import CaptionTrainer, build_trainer, dataloader_workers, training_arguments

# Other modules import these from here; CaptionTrainer and training_arguments live in trainer.py, compute_metrics_for,
# decode and validation_subset in evaluation.py.
__all__ = ["TrialResult", "train_trial", "untrained_key", "cache_summary", "CaptionTrainer", "training_arguments",
           "compute_metrics_for", "decode", "validation_subset"]


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
    callbacks: Sequence[TrainerCallback] = (),
    resumable: Resumable | None = None,
) -> TrialResult:
    """Fine-tune once as the spec says, inside one MLflow run; return the best epoch's metrics and model folder.

    `untrained`: the initial model's validation metrics when already known (see `untrained_key`); they are
    logged as epoch 0 instead of evaluating again. `callbacks`: more Trainer callbacks (e.g. the benchmark's
    clock of evaluation time). `resumable`: a single run whose checkpoints keep what resuming needs, continued
    from `resumable.point` (an interrupted run of the same spec and data) when set.
    """
    # setup: the model as the spec adapts it, the data sets, CIDEr's idf, the per-epoch callback
    captions = [c for example in data.train for c in example.captions]
    model, processor = load_model_and_processor(spec, captions, home, echo=echo)
    prepared = prepare_for_training(model, processor, spec, data, home, echo)
    cache = prepared.cache
    workers = dataloader_workers(spec, data, processor, cached=cache is not None)
    rows = cache.rows if cache else _pixel_rows(data, processor, memo=workers == 0)
    train_set = training_dataset(rows("train", data.train), data.train)
    epoch_val = validation_subset(data.validation, spec)
    subset = len(epoch_val) < len(data.validation)
    val_set, val_refs = evaluation_dataset(rows("validation_subset" if subset else "validation", epoch_val), epoch_val)
    if cache and echo:
        print(cache_summary(cache), flush=True)
    document_frequency = cider_document_frequency(spec, data, len(epoch_val), echo)
    collator = CaptionCollator(processor.tokenizer, model.config.text_config.bos_token_id, spec.max_caption_tokens,
                               prompt=spec.prompt)
    steps_per_epoch = math.ceil(len(train_set) / (spec.train_batch_size * spec.gradient_accumulation_steps))
    samples = SampleCaptions(data, epoch_val, spec, model, processor)  # first: a pruned epoch's captions are kept too
    metrics_callback = CaptionMetricsCallback(spec.epochs, listeners=[samples.log_epoch, *listeners], echo=echo)
    stopping = [EarlyStopping(metrics_callback, spec.objective_metric, spec.greater_is_better,
                              spec.early_stopping_patience, spec.early_stopping_threshold, echo)
                ] if spec.early_stopping_patience else []
    tags = {**tracking.run_tags(spec, data.fingerprint), **(extra_tags or {}), **(resumable.tags if resumable else {})}
    is_main_process = distributed.is_main_process()  # under `accelerate launch` every rank trains; only one logs
    chosen = precision.choose(spec.precision, model, home)
    if echo and is_main_process:
        print(f"precision {chosen.reason}", flush=True)
    point = resumable.point if resumable else None

    with tracking.start_run(spec, run_name=run_name or spec.name, tags=tags, nested=nested,
                            resume_run_id=point.run_id if point else None) as run:
        if is_main_process and not point:  # a resumed run logged these when it started
            _log_data_summary(run, data, len(train_set), len(epoch_val))
            _log_dataset(run, data, spec)
        output_dir = home / "checkpoints" / run.id
        args = training_arguments(spec.replace(precision=chosen.precision), output_dir, steps_per_epoch, echo,
                                  evaluate_untrained=untrained is None and not point, workers=workers,
                                  resumable=resumable is not None)
        trainer = build_trainer(spec, args, model=prepared.model, train_set=train_set, val_set=val_set,
                                collator=collator,
                                compute_metrics=compute_metrics_for(processor.tokenizer, val_refs, document_frequency,
                                                                    samples),
                                callbacks=[metrics_callback, *stopping, *callbacks], echo=echo)
        if is_main_process and not point:
            run.params({
                "world_size": trainer.args.world_size,  # processes training this run together (DDP)
                "untrained_scores": "evaluated" if untrained is None else "reused",
                "cider_df_used": "corpus" if document_frequency else "split",
                **prepared.parameter_counts(),  # what learns: all, the decoder only, or LoRA's adapters
            })
            _log_precision(run, chosen)
        if untrained is not None:
            metrics_callback.record(0, dict(untrained))
        if point:
            metrics_callback.continue_from(point.history, point.logged_step, point.logged_epoch)

        # train, then score the best epoch's model on the whole validation split (if epochs saw a subset) and test
        with prepared.vision_inputs(), no_weight_progress_bars():  # checkpoints are written each epoch
            try:  # ends with the best epoch's weights loaded
                trainer.train(resume_from_checkpoint=str(point.checkpoint) if point else None)
            finally:  # the sample rows not written yet, also when a sweep prunes the trial
                samples.flush()
            history = metrics_callback.history
            untrained = next((h for h in history if h["epoch"] == 0), {})
            best = best_epoch(history, spec)
            full_val = {}
            if subset:
                full_val = evaluate_split(trainer, processor, rows, data.validation, "validation", document_frequency)
            test_metrics = evaluate_split(trainer, processor, rows, data.test, "test", document_frequency)

        # cleanup: keep the best model only, and log what the run found
        model_dir = output_dir / "model"
        with no_weight_progress_bars():
            _save_model(trainer, prepared, model_dir, is_main_process)
        subset_best = {k: v for k, v in best.items() if k != "epoch"}
        val_metrics = full_val or subset_best
        objective = val_metrics[spec.objective_metric]
        if is_main_process:
            if cache:
                _log_cache(run, cache)
            processor.save_pretrained(str(model_dir))
            _drop_checkpoints(output_dir)  # the best weights now live in model_dir
            log_samples(run, trainer.model, processor, data, spec)
            _log_skips(run, trainer.skips, echo)
            run.metrics({
                "objective": objective,
                "best_epoch": best["epoch"],
                "train_steps": trainer.state.global_step,  # optimizer steps: fewer per epoch with more processes
                **{f"best_val_{k}": v for k, v in val_metrics.items()},
                **({f"best_val_subset_{k}": v for k, v in subset_best.items()} if full_val else {}),
                **{f"untrained_val_{k}": v for k, v in untrained.items() if k != "epoch"},
                **{f"test_{k}": v for k, v in test_metrics.items()},
            })
    return TrialResult(
        run_id=run.id,
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
    # LoRA starts with a zero update (lora_B = 0): the untrained model is the base model whatever these are
    "adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_targets",
    "early_stopping_patience", "early_stopping_threshold",
    "system_metrics",
})


def untrained_key(spec: ExperimentSpec, fingerprint: str) -> str:
    """Identifies the untrained model's validation scores: equal keys, equal scores (same weights, data, decoding)."""
    relevant = {k: v for k, v in spec.to_dict().items() if k not in TRAINING_ONLY}
    if spec.model == TINY_MODEL:  # "tiny" names weights built by a recipe: a changed recipe, other weights
        relevant["pretrained_recipe"] = pretrain.RECIPE.digest()
    return hashlib.sha256(json.dumps([relevant, fingerprint], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _pixel_rows(data: CaptionData, processor, memo: bool) -> RowsFor:
    def rows(split: str, examples: Sequence[Example]) -> Rows:
        keep = memo and fits_in_memory(len(examples), processor.image_processor)
        return PixelRows(data, examples, processor.image_processor, memo=keep)

    return rows


def cache_summary(cache: FeatureCache) -> str:
    parts = [f"{r.split} {'hit' if r.hit else 'computed'} {r.megabytes:.1f} MB ({r.seconds:.1f}s)" for r in cache.reports]
    return f"vision features (frozen encoder, cached in {cache.root}): " + ", ".join(parts)


def _save_model(trainer: CaptionTrainer, prepared: PreparedModel, model_dir: Path, is_main_process: bool) -> None:
    """The best model, as from_pretrained loads it. With LoRA the adapter is merged in first, so loading needs no
    peft, and kept alone beside (modeling.adapter_dir); the Trainer then holds the merged model (sample captions)."""
    if not prepared.is_lora:
        trainer.save_model(str(model_dir))  # written by the main process only
    elif is_main_process:
        trainer.model = prepared.merge_lora(adapter_dir(model_dir))
        trainer.model.save_pretrained(str(model_dir))


def _drop_checkpoints(output_dir: Path) -> None:
    for checkpoint in output_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


def _log_data_summary(run: tracking.Run, data: CaptionData, train_pairs: int, epoch_val_images: int) -> None:
    run.params({
        "data_source": data.source,
        "data_train_images": len(data.train),
        "data_train_pairs": train_pairs,
        "data_val_images": len(data.validation),
        "data_val_images_per_epoch": epoch_val_images,
        "data_test_images": len(data.test),
    })
    run.metrics({"data_total_samples": data.total,
                 **{f"data_skipped_{reason}": n for reason, n in sorted(data.skipped.items())}})
    if data.warnings:
        run.tags({"data_warnings": " | ".join(data.warnings)})


def _log_precision(run: tracking.Run, chosen: precision.Choice) -> None:
    """What the run trained in and why; the probe's figures when `auto` measured them."""
    run.params({"precision_used": chosen.precision, "precision_reason": chosen.reason})
    if chosen.gflops:
        run.metrics({f"precision_probe_{name}_gflops": value for name, value in chosen.gflops.items()})


def _log_dataset(run: tracking.Run, data: CaptionData, spec: ExperimentSpec) -> None:
    """The data as an MLflow dataset entity (the UI's "Datasets used"): source and revision, the fingerprint as its
    digest, split sizes and skip counts as its profile."""
    if spec.dataset == PITCH_DATASET:
        kind, source = "generated", {"generator": "blipexp pitch scenes", "scenes": spec.pitch_scenes,
                                     "folder": data.source}
    elif Path(data.source).is_dir():
        kind, source = "local", {"uri": Path(data.source).as_uri()}
    else:
        kind, source = "hugging_face", {"path": data.source, "revision": spec.dataset_revision,
                                        "split": spec.dataset_split}
    profile = {"train_images": len(data.train), "validation_images": len(data.validation),
               "test_images": len(data.test), "total_samples": data.total, "splits": data.splits,
               "skipped": dict(sorted(data.skipped.items()))}
    run.dataset(name=spec.dataset if kind != "local" else Path(data.source).name, digest=data.fingerprint,
                source_type=kind, source=source, profile=profile, context="train")


def _log_skips(run: tracking.Run, skips: SkipTally, echo: bool) -> None:
    """Images that were fine at the first look but not when read for training or evaluation."""
    counts = skips.counts()
    if not counts:
        return
    run.metrics({f"data_skipped_during_run_{reason}": n for reason, n in sorted(counts.items())})
    if echo:
        listed = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))
        print(f"  skipped while training/evaluating (changed since the first look): {listed}", flush=True)


def _log_cache(run: tracking.Run, cache: FeatureCache) -> None:
    run.params({f"vision_cache_{r.split}": "hit" if r.hit else "computed" for r in cache.reports})
    run.metrics({"vision_cache_mb": sum(r.megabytes for r in cache.reports),
                 "vision_cache_seconds": sum(r.seconds for r in cache.reports)})
