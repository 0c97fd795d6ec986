"""The spec's `trainer` pass-through: any Seq2SeqTrainingArguments field blipexp does not set itself, checked
against the installed transformers (its dataclass fields and type hints) and parsed from `--set` text.

Fields the spec already owns (learning_rate, bf16, ...) are refused with the spec field to use instead, and so
are the ones blipexp's own loop depends on (per-epoch evaluation, checkpoints, logging), and any that holds a secret
(hub_token): a spec is logged (params, spec.json, the model card) and the Trainer pickles its arguments into every
checkpoint, so a secret comes from its environment variable instead.
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

from ..runtime import secrecy

PREFIX = "trainer."  # --set trainer.label_smoothing_factor=0.1, search_space key "trainer.label_smoothing_factor"

# Seq2SeqTrainingArguments field -> the spec field that sets it
SPEC_OWNED = {
    "learning_rate": "learning_rate",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "train_batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "weight_decay": "weight_decay",
    "warmup_steps": "warmup_ratio",
    "lr_scheduler_type": "lr_scheduler",
    "max_grad_norm": "max_grad_norm",
    "bf16": "precision",
    "fp16": "precision",
    "seed": "seed",
    "data_seed": "seed",
    "dataloader_num_workers": "dataloader_workers",
    "activation_checkpointing": "gradient_checkpointing",  # transformers 5 name; gradient_checkpointing its old alias
    "gradient_checkpointing": "gradient_checkpointing",
    "torch_compile": "torch_compile",
    "metric_for_best_model": "objective_metric",
    "greater_is_better": "objective_direction",
    "generation_max_length": "max_new_tokens",
    "generation_num_beams": "num_beams",
    "generation_config": "max_new_tokens, num_beams, min_new_tokens, ... (the generation fields)",
}

# Set by blipexp because its loop depends on them -> why
MANAGED = {
    "output_dir": "checkpoints go under <home>/checkpoints/<run id>",
    "eval_strategy": "evaluation runs once per epoch (metrics, pruning and model selection depend on it)",
    "eval_on_start": "the untrained model's scores are epoch 0, evaluated or reused by blipexp",
    "save_strategy": "the best epoch's checkpoint is what gets registered",
    "save_total_limit": "the best and the latest epoch's checkpoints are kept while training, none after it",
    "save_only_model": "a single run's checkpoints hold the optimizer, scheduler and RNG state it resumes from; a "
                       "sweep trial's hold the model only (an interrupted trial is retried from the start)",
    "load_best_model_at_end": "the best epoch's weights are scored on test and registered",
    "logging_strategy": "the training loss is logged four times an epoch",
    "logging_steps": "the training loss is logged four times an epoch",
    "logging_nan_inf_filter": "off: a non-finite training loss must reach the NaN check, not be averaged away",
    "max_steps": "`epochs` sets the length: evaluation and pruning happen per epoch",
    "predict_with_generate": "captions are generated for every evaluation",
    "report_to": "blipexp logs to MLflow itself, into runs it manages",
    "remove_unused_columns": "the collator needs the raw caption column",
    "dataloader_persistent_workers": "follows dataloader_workers",
    "dataloader_pin_memory": "on when there is a GPU",
    "use_cpu": "follows the processes launched (DDP on CPU)",
    "disable_tqdm": "follows the console output (echo; bars on a terminal only)",
}


SECRET_ENV = "HF_TOKEN"  # the Hub's token (hub_token, the one secret a Trainer field takes), read by the Hub's client


@functools.cache
def _hints() -> dict[str, Any]:
    """Init-able Seq2SeqTrainingArguments fields and their types, from the installed transformers."""
    from transformers import Seq2SeqTrainingArguments

    hints = typing.get_type_hints(Seq2SeqTrainingArguments)
    return {f.name: hints[f.name] for f in dataclasses.fields(Seq2SeqTrainingArguments) if f.init}


def check_name(name: str) -> Any:
    """The field's type hint; ValueError for an unknown field, one the spec or blipexp sets, or one holding a secret
    (its name says token, password or secret). No message holds the value."""
    if secrecy.names_secret(name):
        raise ValueError(f"trainer.{name} would hold a secret, and a spec is logged (params, spec.json, the model "
                         f"card) and pickled into every checkpoint: set the environment variable {SECRET_ENV} "
                         "instead, which the Hub's client reads")
    if name in SPEC_OWNED:
        raise ValueError(f"trainer.{name} is set by the spec: use the spec field {SPEC_OWNED[name]} instead "
                         f"(e.g. --set {SPEC_OWNED[name].split(',')[0]}=...)")
    if name in MANAGED:
        raise ValueError(f"trainer.{name} is set by blipexp and cannot be passed through: {MANAGED[name]}")
    hints = _hints()
    if name not in hints:
        close = difflib.get_close_matches(name, hints, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see transformers' Seq2SeqTrainingArguments"
        raise ValueError(f"trainer.{name} is not a Seq2SeqTrainingArguments field: {hint}")
    return hints[name]


def check(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with each name checked and each value of its field's type (text is parsed to it)."""
    checked = {}
    for name, value in values.items():
        hint = check_name(name)
        if isinstance(value, str):
            value = parse(name, value)
        elif not _conforms(value, hint):
            raise ValueError(f"trainer.{name}={value!r} has the wrong type: expected {_type_name(hint)}")
        checked[name] = value
    return checked


def parse(name: str, raw: str) -> Any:
    """`raw` as the field's type: the first member of its union the text is, e.g. 'none' for None, '0.1' a float."""
    hint = check_name(name)
    members = _members(hint)
    if any(_is_enum(m) for m in members):  # `OptimizerNames | str`: the str is another spelling of the same names
        members = tuple(m for m in members if m is not str)
    for member in sorted(members, key=lambda m: m is str):  # str accepts any text: last
        try:
            return _parse_as(raw, member)
        except ValueError:
            continue
    raise ValueError(f"cannot set trainer.{name}={raw!r}: expected {_type_name(hint)}")


def _parse_as(raw: str, member: Any) -> Any:
    origin = typing.get_origin(member) or member
    if member is type(None):
        if raw.lower() in ("none", "null"):
            return None
    elif member is bool:
        if raw.lower() in ("true", "false", "1", "0", "yes", "no"):
            return raw.lower() in ("true", "1", "yes")
    elif member in (int, float):
        return member(raw)
    elif _is_enum(member):
        return member(raw).value  # the plain value, as an experiment file would write it
    elif typing.get_origin(member) is Literal:
        if raw in map(str, typing.get_args(member)):
            return next(v for v in typing.get_args(member) if str(v) == raw)
    elif member in (str, Path):
        return raw
    elif origin in (dict, list):
        value = json.loads(raw)  # JSONDecodeError is a ValueError
        if isinstance(value, origin):
            return value
    raise ValueError(f"{raw!r} is not {_type_name(member)}")


def _members(hint: Any) -> tuple:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _is_enum(member: Any) -> bool:
    return isinstance(member, type) and issubclass(member, enum.Enum)


def _conforms(value: Any, hint: Any) -> bool:
    for member in _members(hint):
        origin = typing.get_origin(member) or member
        if member is type(None):
            ok = value is None
        elif member is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif member is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif typing.get_origin(member) is Literal:
            ok = value in typing.get_args(member)
        elif _is_enum(member):
            ok = isinstance(value, member) or value in {m.value for m in member}
        else:
            ok = isinstance(origin, type) and isinstance(value, origin)
        if ok:
            return True
    return False


def _type_name(hint: Any) -> str:
    names = []
    members = _members(hint)
    for member in members:
        if member is str and any(_is_enum(m) for m in members):
            continue  # another spelling of the enum's names
        if _is_enum(member):
            names.append("one of " + ", ".join(str(m.value) for m in member))
        elif member is type(None):
            names.append("none")
        else:
            names.append(getattr(member, "__name__", str(member)))
    return " or ".join(names)
