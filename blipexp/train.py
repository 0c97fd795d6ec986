"""One trial, as a recipe of named steps: `_setup` (model, adaptation, data sets, callbacks), then inside one MLflow
run `_setup_trainer`, `_train` (the epochs, each scored on validation), `_save_best` and `_score_as_served` (the best
model loaded as the registry will serve it, scored on the whole validation and test splits, per image, with
intervals), and `_log_results`. A single run stopped after its training ended is resumed from its saved best model:
scored, logged and registered, not trained again (resume.py)."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from . import distributed, environment, eval_cache, generation, interrupts, precision, pretrain, tracking
from .callbacks import CaptionMetricsCallback, EarlyStopping, EpochListener
from .data import manifest
from .data.collator import CaptionCollator
from .data.features import (
    CaptionDataset,
    PixelRows,
    Rows,
    SkipTally,
    evaluation_dataset,
    fits_in_memory,
    training_dataset,
)
from .data.sources import CaptionData, Example
from .evaluation import (
    ImageScoresListener,
    RowsFor,
    SampleCaptions,
    SplitScores,
    best_epoch,
    cider_document_frequency,
    compute_metrics_for,
    log_samples,
    score_split,
    validation_subset,
)
from .feature_cache import FeatureCache
from .modeling import (
    PreparedModel,
    adapter_dir,
    load_model_and_processor,
    prepare_for_training,
)
from .progress import no_weight_progress_bars
from .resume import NOT_TRAINING, Resumable, ResumePoint, mark_trained
from .spec import PITCH_DATASET, TINY_MODEL, ExperimentSpec
from .trainer import CaptionTrainer, build_trainer, dataloader_workers, training_arguments


@dataclass
class TrialResult:
    run_id: str
    objective: float  # the spec's objective, scored on the whole validation split by the best model as served
    best_epoch: int
    val_metrics: dict[str, float]  # the best model as served, on the whole validation split
    test_metrics: dict[str, float]  # the best model as served, on the test split (empty without one)
    untrained: dict[str, float]  # validation metrics before training
    history: list[dict[str, float]] = field(default_factory=list)
    model_dir: Path | None = None  # model + processor, loadable with from_pretrained
    validation: SplitScores | None = None  # per-image captions and scores behind val_metrics
    test: SplitScores | None = None  # ... behind test_metrics
    version: object = None  # the registered model version, when train_trial registered it (`register`)


@dataclass
class _Setup:
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
    image_scores: ImageScoresListener | None  # handed each epoch's per-image validation scores
    metrics_callback: CaptionMetricsCallback
    stopping: list[EarlyStopping]
    precision: precision.Choice
    echo: bool

    @property
    def subset(self) -> bool:
        return len(self.epoch_val) < len(self.data.validation)


def train_trial(
    spec: ExperimentSpec,
    data: CaptionData,
    home: Path,
    *,
    run_name: str | None = None,
    listeners: Sequence[EpochListener] = (),
    image_scores: ImageScoresListener | None = None,
    extra_tags: dict[str, str] | None = None,
    nested: bool = False,
    echo: bool = True,
    untrained: dict[str, float] | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    resumable: Resumable | None = None,
    register: Callable[[TrialResult], object] | None = None,
) -> TrialResult:
    """Fine-tune once as the spec says, inside one MLflow run; return the best model's scores and its folder.

    `untrained`: the initial model's validation metrics when already known (see `untrained_key`); they are
    logged as epoch 0 instead of evaluating again. `image_scores`: handed each validation's per-image scores before
    the `listeners` get its metrics (a sweep's paired pruner). `callbacks`: more Trainer callbacks (e.g. the
    benchmark's clock of evaluation time). `resumable`: a single run whose checkpoints keep what resuming needs, continued
    from `resumable.point` (an interrupted run of the same spec and data) when set. `register`: registers the
    model inside the run, once its results are logged (a stop there leaves the run resumable); its answer is
    the result's `version`.
    """
    setup = _setup(spec, data, home, listeners, echo, image_scores)
    point = resumable.point if resumable else None
    tags = {**tracking.run_tags(spec, data.fingerprint), **(extra_tags or {}), **(resumable.tags if resumable else {})}
    is_main_process = distributed.is_main_process()  # under `accelerate launch` every rank trains; only one logs
    with tracking.start_run(spec, run_name=run_name or spec.name, tags=tags, nested=nested,
                            resume_run_id=point.run_id if point else None) as run:
        model_dir = home / "checkpoints" / run.id / "model"
        after_training = point is not None and point.trained  # stopped later: its saved best model is used as it is
        if after_training:
            trained = _Trained(point.history, point.train_steps, SkipTally())
        else:
            trainer = _setup_trainer(setup, run, untrained, point, callbacks, resumable is not None, is_main_process)
            trained = _train(setup, trainer, point)
            _save_best(setup, trainer, model_dir, is_main_process, resumable is not None)
        history = trained.history
        if not is_main_process:  # the main process scores, logs and registers
            return TrialResult(run.id, math.nan, int(best_epoch(history, spec)["epoch"]), {}, {}, {}, history,
                               model_dir)
        validation, test = _score_as_served(setup, model_dir, trained.skips, resumed=after_training)
        result = TrialResult(
            run_id=run.id,
            objective=validation.metrics[spec.objective_metric],
            best_epoch=int(best_epoch(history, spec)["epoch"]),
            val_metrics=validation.metrics,
            test_metrics=test.metrics if test else {},
            untrained=_without_epoch(next((h for h in history if h["epoch"] == 0), {})),
            history=history,
            model_dir=model_dir,
            validation=validation,
            test=test,
        )
        if not (after_training and point.results_logged):  # a run stopped while registering logged them before
            with interrupts.held():  # whole or not at all: a resumed run never logs a table's rows twice
                _log_results(setup, run, trained, result)
        if register is not None:
            result.version = register(result)
    return result


# --- setup


def _setup(spec: ExperimentSpec, data: CaptionData, home: Path, listeners: Sequence[EpochListener],
           echo: bool, image_scores: ImageScoresListener | None) -> _Setup:
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
    return _Setup(
        spec=spec, data=data, home=home, processor=processor, prepared=prepared, workers=workers,
        train_set=train_set, epoch_val=epoch_val, val_set=val_set, val_refs=val_refs,
        collator=CaptionCollator(processor.tokenizer, model.config.text_config.bos_token_id, spec.max_caption_tokens,
                                 prompt=spec.prompt),
        steps_per_epoch=math.ceil(len(train_set) / (spec.train_batch_size * spec.gradient_accumulation_steps)),
        document_frequency=cider_document_frequency(spec, data, len(epoch_val), echo),
        samples=samples, image_scores=image_scores, metrics_callback=metrics_callback, stopping=stopping,
        precision=chosen, echo=echo,
    )


def _setup_trainer(setup: _Setup, run: tracking.Run, untrained: dict[str, float] | None, point: ResumePoint | None,
                   callbacks: Sequence[TrainerCallback], resumable: bool, is_main_process: bool) -> CaptionTrainer:
    """The Trainer for this run, with what the run learns logged first (a resumed run logged it when it started)."""
    spec = setup.spec
    if is_main_process and not point:
        _log_data_summary(run, setup.data, len(setup.train_set), len(setup.epoch_val))
        _log_dataset(run, setup.data, spec)
    args = training_arguments(spec.replace(precision=setup.precision.precision), setup.home / "checkpoints" / run.id,
                              setup.steps_per_epoch, setup.echo, evaluate_untrained=untrained is None and not point,
                              workers=setup.workers, resumable=resumable)
    trainer = build_trainer(spec, args, model=setup.prepared.model, train_set=setup.train_set, val_set=setup.val_set,
                            collator=setup.collator,
                            compute_metrics=compute_metrics_for(setup.processor.tokenizer, setup.val_refs,
                                                                setup.document_frequency, setup.samples,
                                                                setup.image_scores),
                            callbacks=[setup.metrics_callback, *setup.stopping, *callbacks], echo=setup.echo)
    if is_main_process and not point:
        run.params({
            "world_size": trainer.args.world_size,  # processes training this run together (DDP)
            "untrained_scores": "evaluated" if untrained is None else "reused",
            "cider_df_used": "corpus" if setup.document_frequency else "split",
            **setup.prepared.parameter_counts(),  # what learns: all, the decoder only, or LoRA's adapters
        })
        _log_precision(run, setup.precision)
        _log_environment(run, setup.precision.precision)
    if untrained is not None:
        setup.metrics_callback.record(0, dict(untrained))
    if point:
        setup.metrics_callback.continue_from(point.history, point.logged_step, point.logged_epoch)
    return trainer


# --- train


@dataclass
class _Trained:
    """What training leaves for scoring and logging."""

    history: list[dict[str, float]]  # validation scores by epoch, 0 (untrained) first
    steps: int  # optimizer steps taken
    skips: SkipTally  # images found unusable while training


def _train(setup: _Setup, trainer: CaptionTrainer, point: ResumePoint | None) -> _Trained:
    """Every epoch, each scored on validation; ends with the best epoch's weights loaded."""
    with setup.prepared.vision_inputs(), no_weight_progress_bars():  # checkpoints are written each epoch
        try:
            trainer.train(resume_from_checkpoint=str(point.checkpoint) if point else None)
        finally:  # the sample rows not written yet, also when a sweep prunes the trial
            setup.samples.flush()
    return _Trained(setup.metrics_callback.history, trainer.state.global_step, trainer.skips)


# --- the best model, as it will be served


def _save_best(setup: _Setup, trainer: CaptionTrainer, model_dir: Path, is_main_process: bool,
               resumable: bool) -> None:
    """The best model and its processor, as from_pretrained loads them; a resumable run's folder is then marked
    trained (a re-run scores and logs this model instead of training again); the epoch checkpoints go. With LoRA
    the adapter is merged in first, so loading needs no peft, and kept alone beside (modeling.adapter_dir)."""
    with no_weight_progress_bars():
        if not setup.prepared.is_lora:
            trainer.save_model(str(model_dir))  # written by the main process only
        elif is_main_process:
            trainer.model = setup.prepared.merge_lora(adapter_dir(model_dir))
            trainer.model.save_pretrained(str(model_dir))
    if is_main_process:
        setup.processor.save_pretrained(str(model_dir))
        if resumable:
            mark_trained(model_dir.parent, trainer.state.global_step)
        for checkpoint in model_dir.parent.glob("checkpoint-*"):  # the best weights now live in model_dir
            shutil.rmtree(checkpoint, ignore_errors=True)


def _score_as_served(setup: _Setup, model_dir: Path, skips: SkipTally,
                     resumed: bool = False) -> tuple[SplitScores, SplitScores | None]:
    """The whole validation and test splits scored by the saved model loaded as the registry serves it (in its own
    precision, from pixels), and kept in the evaluation cache for `evaluate`, `compare` and `promote`. Whatever the
    trial trained in (bf16 autocast, cached half-precision features), these are the registered model's numbers.
    `resumed`: a run stopped after its training; a split it had scored is read back from the cache."""
    spec, data = setup.spec, setup.data
    settings = generation.settings(spec)
    weights = eval_cache.weights_digest(model_dir)
    served = None  # the model and processor, loaded once a split is to be scored
    scored = []
    for split, examples in (("validation", data.validation), ("test", data.test)):
        if not examples:
            scored.append(None)
            continue
        entry = eval_cache.key(weights, data.fingerprint, split, settings, spec.cider_df)
        stored = eval_cache.read(setup.home, entry) if resumed else None
        if stored is not None:
            scored.append(SplitScores.from_json(stored))
            continue
        served = served or _load_served(model_dir)
        scores = score_split(*served, data, examples, split, spec, settings, setup.workers, skips)
        eval_cache.write(setup.home, entry, scores.to_json())
        scored.append(scores)
    return scored[0], scored[1]


def _load_served(model_dir: Path) -> tuple[object, object]:
    """The saved model and processor as the registry serves them."""
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    with no_weight_progress_bars():
        model = BlipForConditionalGeneration.from_pretrained(str(model_dir))
        processor = BlipProcessor.from_pretrained(str(model_dir))
    return model.to("cuda" if torch.cuda.is_available() else "cpu"), processor


# --- what the run found


def _log_results(setup: _Setup, run: tracking.Run, trained: _Trained, result: TrialResult) -> None:
    spec = setup.spec
    if setup.prepared.cache:
        _log_cache(run, setup.prepared.cache)
    log_samples(run, setup.data, result.validation, spec.sample_captions)
    _log_skips(run, trained.skips, setup.echo)
    best = best_epoch(result.history, spec)
    evidence_metrics, signatures = {}, {}
    for prefix, scores in (("best_val", result.validation), ("test", result.test)):
        if scores is None:
            continue
        run.table(scores.table(), f"per_image/{scores.split}.json")
        signatures[f"{prefix}_signature"] = scores.signature(spec.bootstrap_resamples, spec.seed)
        for key, interval in scores.intervals(spec.bootstrap_resamples, spec.seed).items():
            evidence_metrics[f"{prefix}_{key}_ci_low"] = interval.low
            evidence_metrics[f"{prefix}_{key}_ci_high"] = interval.high
    run.tags(signatures)
    run.metrics({
        "objective": result.objective,
        "best_epoch": result.best_epoch,
        "train_steps": trained.steps,  # optimizer steps: fewer per epoch with more processes
        **{f"best_val_{k}": v for k, v in result.val_metrics.items()},
        # the best epoch's own scores on the per-epoch subset (in the training's precision)
        **({f"best_val_subset_{k}": v for k, v in _without_epoch(best).items()} if setup.subset else {}),
        **{f"untrained_val_{k}": v for k, v in result.untrained.items()},
        **{f"test_{k}": v for k, v in result.test_metrics.items()},
        **evidence_metrics,
    })


def _without_epoch(entry: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in entry.items() if k != "epoch"}


# Fields that change training but not the model before it: trials differing only in these share epoch 0. Those
# that change not even the training (resume.NOT_TRAINING) are among them by construction: one list each.
TRAINING_ONLY = NOT_TRAINING | frozenset({
    "learning_rate", "epochs", "train_batch_size", "gradient_accumulation_steps", "weight_decay", "warmup_ratio",
    "lr_scheduler", "max_grad_norm", "freeze_vision_encoder", "cache_vision_features", "mlflow_experiment",
    # LoRA starts with a zero update (lora_B = 0): the untrained model is the base model whatever these are
    "adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_targets",
    "early_stopping_patience", "early_stopping_threshold",
    "system_metrics",
})


def untrained_key(spec: ExperimentSpec, fingerprint: str, precision_used: str) -> str:
    """Identifies the untrained model's validation scores: equal keys, equal scores (same weights, data, decoding,
    and the precision actually used: `precision.used`, never "auto")."""
    relevant = {k: v for k, v in spec.to_dict().items() if k not in TRAINING_ONLY}
    relevant["precision"] = precision_used
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


def _log_environment(run: tracking.Run, precision_used: str) -> None:
    """What the numbers may depend on besides spec and data: environment.json, the `env_*` params, and the diff of
    a dirty checkout (uncommitted.diff)."""
    git = environment.checkout()
    recorded = environment.current(precision_used, git)
    run.dict(recorded, environment.ARTIFACT)
    run.params(environment.params(recorded))
    if git.diff:
        run.text(git.diff, environment.DIFF_ARTIFACT)


def _log_precision(run: tracking.Run, chosen: precision.Choice) -> None:
    """What the run trained in and why; the probe's figures when `auto` measured them."""
    run.params({"precision_used": chosen.precision, "precision_reason": chosen.reason})
    if chosen.gflops:
        run.metrics({f"precision_probe_{name}_gflops": value for name, value in chosen.gflops.items()})


def _log_dataset(run: tracking.Run, data: CaptionData, spec: ExperimentSpec) -> None:
    """The data as an MLflow dataset entity (the UI's "Datasets used"): source and revision, the fingerprint as its
    digest, split sizes and skip counts as its profile; and their manifest (per image: content, captions, split)."""
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
    run.text(manifest.as_text(manifest.build(data)), manifest.ARTIFACT)  # what changed, should the data change


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
