"""One trial, as a recipe of named steps: `setup_trial` (model, adaptation, data sets, callbacks: setup.py), then
inside one MLflow run `setup_trainer`, `_train` (the epochs, each scored on validation), `_save_best` and `_score_as_served` (the best
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

from .. import tracking
from ..data.features import SkipTally
from ..data.sources import CaptionData
from ..experiment.presets import TINY_MODEL
from ..experiment.spec import ExperimentSpec
from ..model import generation, pretrain
from ..model.modeling import adapter_dir
from ..runtime import distributed, interrupts
from ..runtime.progress import no_weight_progress_bars
from ..scoring import eval_cache
from ..scoring.evaluation import SplitScores, best_epoch, score_split
from .callbacks import EpochListener
from .records import log_cache, log_skips
from .resume import NOT_TRAINING, Resumable, ResumePoint, mark_trained
from .samples import log_samples
from .setup import TrialSetup, setup_trainer, setup_trial
from .trainer import CaptionTrainer


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

    @classmethod
    def scored(cls, run_id: str, spec: ExperimentSpec, history: list[dict[str, float]], model_dir: Path,
               validation: SplitScores, test: SplitScores | None) -> TrialResult:
        """A trial whose best model was scored as served: on `validation` (the objective) and `test`."""
        return cls(run_id=run_id, objective=validation.metrics[spec.objective_metric],
                   best_epoch=int(best_epoch(history, spec)["epoch"]), val_metrics=validation.metrics,
                   test_metrics=test.metrics if test else {},
                   untrained=_without_epoch(next((h for h in history if h["epoch"] == 0), {})),
                   history=history, model_dir=model_dir, validation=validation, test=test)


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
    register: Callable[[TrialResult], object] | None = None,
) -> TrialResult:
    """Fine-tune once as the spec says, inside one MLflow run; return the best model's scores and its folder.

    `untrained`: the initial model's validation metrics when already known (see `untrained_key`); they are
    logged as epoch 0 instead of evaluating again. `callbacks`: more Trainer callbacks (e.g. the benchmark's
    clock of evaluation time). `resumable`: a single run whose checkpoints keep what resuming needs, continued
    from `resumable.point` (an interrupted run of the same spec and data) when set. `register`: registers the
    model inside the run, once its results are logged (a stop there leaves the run resumable); its answer is
    the result's `version`.
    """
    setup = setup_trial(spec, data, home, listeners, echo)
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
            trainer = setup_trainer(setup, run, untrained, point, callbacks, resumable is not None, is_main_process)
            trained = _train(setup, trainer, point)
            _save_best(setup, trainer, model_dir, is_main_process, resumable is not None)
        history = trained.history
        if not is_main_process:  # the main process scores, logs and registers
            return TrialResult(run.id, math.nan, int(best_epoch(history, spec)["epoch"]), {}, {}, {}, history,
                               model_dir)
        validation, test = _score_as_served(setup, model_dir, trained.skips, resumed=after_training)
        result = TrialResult.scored(run.id, spec, history, model_dir, validation, test)
        if not (after_training and point.results_logged):  # a run stopped while registering logged them before
            with interrupts.held():  # whole or not at all: a resumed run never logs a table's rows twice
                _log_results(setup, run, trained, result)
        if register is not None:
            result.version = register(result)
    return result


# --- train


@dataclass
class _Trained:
    """What training leaves for scoring and logging."""

    history: list[dict[str, float]]  # validation scores by epoch, 0 (untrained) first
    steps: int  # optimizer steps taken
    skips: SkipTally  # images found unusable while training


def _train(setup: TrialSetup, trainer: CaptionTrainer, point: ResumePoint | None) -> _Trained:
    """Every epoch, each scored on validation; ends with the best epoch's weights loaded."""
    with setup.prepared.vision_inputs(), no_weight_progress_bars():  # checkpoints are written each epoch
        try:
            trainer.train(resume_from_checkpoint=str(point.checkpoint) if point else None)
        finally:  # the sample rows not written yet, also when a sweep prunes the trial
            setup.samples.flush()
    return _Trained(setup.metrics_callback.history, trainer.state.global_step, trainer.skips)


# --- the best model, as it will be served


def _save_best(setup: TrialSetup, trainer: CaptionTrainer, model_dir: Path, is_main_process: bool,
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


def _score_as_served(setup: TrialSetup, model_dir: Path, skips: SkipTally,
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


def _log_results(setup: TrialSetup, run: tracking.Run, trained: _Trained, result: TrialResult) -> None:
    spec = setup.spec
    if setup.prepared.cache:
        log_cache(run, setup.prepared.cache)
    log_samples(run, setup.data, result.validation, spec.sample_captions)
    log_skips(run, trained.skips, setup.echo)
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


