"""A trial's setup, before and as its MLflow run starts: the model as the spec adapts it, the data sets, CIDEr's
idf for the epochs and the per-epoch callbacks (`setup_trial`), then the Trainer, with what the run learns about
how it was made logged first (`setup_trainer`)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from .. import tracking
from ..data.collator import CaptionCollator
from ..data.features import (
    CaptionDataset,
    PixelRows,
    Rows,
    dataloader_workers,
    evaluation_dataset,
    fits_in_memory,
    training_dataset,
)
from ..data.sources import CaptionData, Example
from ..experiment.spec import ExperimentSpec
from ..model import precision
from ..model.feature_cache import FeatureCache
from ..model.modeling import PreparedModel, load_model_and_processor, prepare_for_training
from ..runtime import distributed
from ..scoring.evaluation import RowsFor, cider_document_frequency, compute_metrics_for, validation_subset
from .callbacks import CaptionMetricsCallback, EarlyStopping, EpochListener
from .records import log_data_summary, log_dataset, log_environment, log_precision
from .resume import ResumePoint
from .samples import SampleCaptions
from .trainer import CaptionTrainer, build_trainer, training_arguments


@dataclass
class TrialSetup:
    """What a trial trains and how it is scored, made before its MLflow run starts."""

    spec: ExperimentSpec
    data: CaptionData
    home: Path
    processor: object
    prepared: PreparedModel
    workers: int
    train_set: CaptionDataset
    epoch_val: list[Example]  # the validation images scored every epoch (all, or a fixed subset)
    val_set: CaptionDataset
    val_refs: list[list[str]]
    collator: CaptionCollator
    steps_per_epoch: int
    document_frequency: object  # CIDEr's idf for the per-epoch validation (None: the scored set's own)
    samples: SampleCaptions
    metrics_callback: CaptionMetricsCallback
    stopping: list[EarlyStopping]
    precision: precision.Choice
    echo: bool

    @property
    def subset(self) -> bool:
        return len(self.epoch_val) < len(self.data.validation)


def setup_trial(spec: ExperimentSpec, data: CaptionData, home: Path, listeners: Sequence[EpochListener],
                echo: bool) -> TrialSetup:
    """The model as the spec adapts it, the data sets, CIDEr's idf for the epochs, the per-epoch callbacks."""
    captions = [c for example in data.train for c in example.captions]
    model, processor = load_model_and_processor(spec, captions, home, echo=echo)
    prepared = prepare_for_training(model, processor, spec, data, home, echo)
    cache = prepared.cache
    workers = dataloader_workers(spec, data, processor, cached=cache is not None)
    rows = cache.rows if cache else _pixel_rows(data, processor, memo=workers == 0)
    epoch_val = validation_subset(data.validation, spec)
    subset = len(epoch_val) < len(data.validation)
    val_set, val_refs = evaluation_dataset(rows("validation_subset" if subset else "validation", epoch_val), epoch_val)
    if cache and echo:
        print(cache_summary(cache), flush=True)
    train_set = training_dataset(rows("train", data.train), data.train)
    samples = SampleCaptions(data, epoch_val, spec, model, processor)  # first: a pruned epoch's captions are kept too
    metrics_callback = CaptionMetricsCallback(spec.epochs, listeners=[samples.log_epoch, *listeners], echo=echo)
    stopping = [EarlyStopping(metrics_callback, spec.objective_metric, spec.greater_is_better,
                              spec.early_stopping_patience, spec.early_stopping_threshold, echo)
                ] if spec.early_stopping_patience else []
    chosen = precision.choose(spec.precision, model, home)
    if echo and distributed.is_main_process():
        print(f"precision {chosen.reason}", flush=True)
    return TrialSetup(
        spec=spec, data=data, home=home, processor=processor, prepared=prepared, workers=workers,
        train_set=train_set, epoch_val=epoch_val, val_set=val_set, val_refs=val_refs,
        collator=CaptionCollator(processor.tokenizer, model.config.text_config.bos_token_id, spec.max_caption_tokens,
                                 prompt=spec.prompt),
        steps_per_epoch=math.ceil(len(train_set) / (spec.train_batch_size * spec.gradient_accumulation_steps)),
        document_frequency=cider_document_frequency(spec, data, len(epoch_val), echo),
        samples=samples, metrics_callback=metrics_callback, stopping=stopping, precision=chosen, echo=echo,
    )


def setup_trainer(setup: TrialSetup, run: tracking.Run, untrained: dict[str, float] | None,
                  point: ResumePoint | None, callbacks: Sequence[TrainerCallback], resumable: bool,
                  is_main_process: bool) -> CaptionTrainer:
    """The Trainer for this run, with what the run learns logged first (a resumed run logged it when it started)."""
    spec = setup.spec
    if is_main_process and not point:
        log_data_summary(run, setup.data, len(setup.train_set), len(setup.epoch_val))
        log_dataset(run, setup.data, spec)
    args = training_arguments(spec.replace(precision=setup.precision.precision), setup.home / "checkpoints" / run.id,
                              setup.steps_per_epoch, setup.echo, evaluate_untrained=untrained is None and not point,
                              workers=setup.workers, resumable=resumable)
    trainer = build_trainer(spec, args, model=setup.prepared.model, train_set=setup.train_set, val_set=setup.val_set,
                            collator=setup.collator,
                            compute_metrics=compute_metrics_for(setup.processor.tokenizer, setup.val_refs,
                                                                setup.document_frequency, setup.samples.remember),
                            callbacks=[setup.metrics_callback, *setup.stopping, *callbacks], echo=setup.echo)
    if is_main_process and not point:
        run.params({
            "world_size": trainer.args.world_size,  # processes training this run together (DDP)
            "untrained_scores": "evaluated" if untrained is None else "reused",
            "cider_df_used": "corpus" if setup.document_frequency else "split",
            **setup.prepared.parameter_counts(),  # what learns: all, the decoder only, or LoRA's adapters
        })
        log_precision(run, setup.precision)
        log_environment(run, setup.precision.precision)
    if untrained is not None:
        setup.metrics_callback.record(0, dict(untrained))
    if point:
        setup.metrics_callback.continue_from(point.history, point.logged_step, point.logged_epoch)
    return trainer


def _pixel_rows(data: CaptionData, processor, memo: bool) -> RowsFor:
    def rows(split: str, examples: Sequence[Example]) -> Rows:
        keep = memo and fits_in_memory(len(examples), processor.image_processor)
        return PixelRows(data, examples, processor.image_processor, memo=keep)

    return rows


def cache_summary(cache: FeatureCache) -> str:
    parts = [f"{r.split} {'hit' if r.hit else 'computed'} {r.megabytes:.1f} MB ({r.seconds:.1f}s)" for r in cache.reports]
    return f"vision features (frozen encoder, cached in {cache.root}): " + ", ".join(parts)
