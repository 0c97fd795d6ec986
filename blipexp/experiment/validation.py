"""What a valid spec is: each field's type, range and agreement with the others, checked when a spec is made. A
ValueError names the field, its value and the fix (fields.require); `trainer`'s text values are parsed to their
types."""
from __future__ import annotations

import re

from . import trainer_args
from .fields import field_types, matches, require, type_name
from .metric_keys import OBJECTIVES
from .presets import LORA_PRESETS, PITCH_DATASET, TINY_MODEL
from .search_space import check_space


def validate(spec) -> None:
    """ValueError unless `spec` (an ExperimentSpec) holds valid values."""
    _types(spec)
    require(spec.learning_rate > 0, "learning_rate", spec.learning_rate, "must be > 0, e.g. 5e-5")
    for key in ("epochs", "train_batch_size", "eval_batch_size", "gradient_accumulation_steps",
                "max_new_tokens", "num_beams", "pitch_scenes", "n_trials"):
        require(getattr(spec, key) >= 1, key, getattr(spec, key), "must be >= 1")
    require(spec.max_caption_tokens >= 4, "max_caption_tokens", spec.max_caption_tokens, "must be >= 4")
    for key in ("val_fraction", "test_fraction"):
        require(0 <= getattr(spec, key) < 1, key, getattr(spec, key), "must be in [0, 1)")
    require(spec.val_fraction > 0, "val_fraction", spec.val_fraction,
             "must be > 0: validation metrics select the best model")
    require(spec.val_fraction + spec.test_fraction < 1, "val_fraction + test_fraction",
             spec.val_fraction + spec.test_fraction, "must be < 1 to leave images for training")
    require(0 <= spec.max_bad_fraction <= 1, "max_bad_fraction", spec.max_bad_fraction, "must be in [0, 1]")
    require(0 <= spec.warmup_ratio < 1, "warmup_ratio", spec.warmup_ratio, "must be in [0, 1)")
    require(spec.dataloader_workers >= -1, "dataloader_workers", spec.dataloader_workers, "must be >= 0, or -1 (auto)")
    for key in ("weight_decay", "max_grad_norm", "sample_captions", "val_subset", "bootstrap_resamples",
                "confirm_seeds"):
        require(getattr(spec, key) >= 0, key, getattr(spec, key), "must be >= 0")
    _generation(spec)
    spec.trainer = trainer_args.check(spec.trainer)  # text values parsed to the field's type
    require(spec.early_stopping_patience >= 0, "early_stopping_patience", spec.early_stopping_patience,
             "must be >= 0 (0 turns early stopping off), e.g. 2")
    require(spec.early_stopping_threshold >= 0, "early_stopping_threshold", spec.early_stopping_threshold,
             "must be >= 0: the objective's smallest change that counts as an improvement, e.g. 0.01")
    require(spec.objective_metric in OBJECTIVES, "objective_metric", spec.objective_metric,
             f"must be one of {', '.join(OBJECTIVES)}")
    natural = spec.natural_direction
    require(spec.objective_direction in ("auto", natural), "objective_direction", spec.objective_direction,
             f"contradicts objective_metric={spec.objective_metric!r} (a {'lower' if natural == 'minimize' else 'higher'} "
             f"{spec.objective_metric} is better): --set objective_direction=auto (or {natural})")
    require(bool(spec.model.strip()), "model", spec.model, f"must name a Hub id, a folder or '{TINY_MODEL}'")
    require(bool(spec.dataset.strip()), "dataset", spec.dataset, f"must name a Hub id, a folder or '{PITCH_DATASET}'")
    _lora(spec)
    check_space(spec.search_space(), field_types(type(spec)))


def _types(spec) -> None:
    for key, hint in field_types(type(spec)).items():
        value = getattr(spec, key)
        if not matches(value, hint):
            raise ValueError(f"{key}={value!r} has the wrong type: expected {type_name(hint)}")


def _lora(spec) -> None:
    require(spec.lora_r >= 1, "lora_r", spec.lora_r, "must be >= 1, e.g. 8")
    require(spec.lora_alpha >= 1, "lora_alpha", spec.lora_alpha, "must be >= 1, e.g. 2 * lora_r")
    require(0 <= spec.lora_dropout < 1, "lora_dropout", spec.lora_dropout, "must be in [0, 1)")
    try:  # whether it matches any layer is checked against the model (modeling.add_lora)
        re.compile(spec.lora_pattern)
    except re.error as exc:
        raise ValueError(f"lora_targets={spec.lora_targets!r} is neither a preset ({', '.join(LORA_PRESETS)}) "
                         f"nor a valid regular expression ({exc}): --set lora_targets=decoder") from None


def _generation(spec) -> None:
    require(0 <= spec.min_new_tokens <= spec.max_new_tokens, "min_new_tokens", spec.min_new_tokens,
             f"must be in [0, max_new_tokens={spec.max_new_tokens}]")
    require(spec.repetition_penalty > 0, "repetition_penalty", spec.repetition_penalty,
             "must be > 0 (1: no penalty, e.g. 1.2 to curb repeats)")
    require(spec.no_repeat_ngram_size >= 0, "no_repeat_ngram_size", spec.no_repeat_ngram_size,
             "must be >= 0 (0: off)")
    require(spec.prompt == spec.prompt.strip(), "prompt", spec.prompt,
             f"has spaces at an end: --set prompt={spec.prompt.strip()!r}")
