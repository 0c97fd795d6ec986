"""What a served model may be asked, and how it batches: the operator's settings (environment variables, read when
the model loads) and each request's generation settings, checked in one place.

A request's `params` override the model's registered generation settings (generation.json). Params that cost
time or memory are bounded: `batch_size` (images decoded and generated together per request), `num_beams`,
`max_new_tokens` and the prompt's length; the others must be valid (`min_new_tokens` <= `max_new_tokens`, a
positive `repetition_penalty`, finite penalties). A request outside them gets a BadRequest: a ValueError in-process,
a 400 naming the limit and its variable when served. A registered setting outside them stops the model from loading.
"""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

MAX_BATCH_VARIABLE = "BLIPEXP_SERVE_MAX_BATCH"
MAX_WAIT_VARIABLE = "BLIPEXP_SERVE_MAX_WAIT_MS"
BUSY_WAIT_VARIABLE = "BLIPEXP_SERVE_BUSY_WAIT_MS"
REQUEST_THREADS_VARIABLE = "BLIPEXP_SERVE_REQUEST_THREADS"
CAPTION_TIMEOUT_VARIABLE = "BLIPEXP_SERVE_CAPTION_TIMEOUT_S"
LIMIT_PREFIX = "BLIPEXP_SERVE_LIMIT_"  # + a Limits field in capitals, e.g. BLIPEXP_SERVE_LIMIT_NUM_BEAMS
LOG_LEVEL_VARIABLE = "BLIPEXP_SERVE_LOG_LEVEL"  # e.g. DEBUG: one line per batch on the server's stderr


class BadRequest(MlflowException, ValueError):
    """A request malformed as a whole: a ValueError in-process, a 400 with this message (no stack trace) served."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


@dataclass(frozen=True)
class Batching:
    """How concurrent requests share generation (batcher.py); measured in BENCHMARKS.md."""

    max_batch: int = 8  # images per generate call at most; 0: off, each request generates alone in its own thread
    max_wait_ms: float = 2.0  # how long the first waiting image waits for others before its batch runs anyway
    busy_wait_ms: float = 50.0  # under load, how long a batch waits at most for the images that were in flight
    # requests MLflow's scoring server runs at once (each decodes its images, then waits for its batch): asyncio's
    # default, cores + 4 (6 on 2 cores), would keep batches of one-image requests below max_batch
    request_threads: int = 16
    # how long a request waits for its captions at most, then each row not captioned says so: long enough for a slow
    # CPU, and below MLflow's request timeout (60 s, `mlflow models serve --timeout`), whose bare 504 would come first
    caption_timeout_s: float = 50.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Batching:
        return cls(max_batch=_env_number(environ, MAX_BATCH_VARIABLE, int, cls.max_batch, low=0),
                   max_wait_ms=_env_number(environ, MAX_WAIT_VARIABLE, float, cls.max_wait_ms, low=0),
                   busy_wait_ms=_env_number(environ, BUSY_WAIT_VARIABLE, float, cls.busy_wait_ms, low=0),
                   request_threads=_env_number(environ, REQUEST_THREADS_VARIABLE, int, cls.request_threads, low=1),
                   caption_timeout_s=_env_number(environ, CAPTION_TIMEOUT_VARIABLE, float, cls.caption_timeout_s,
                                                 low=1))


@dataclass(frozen=True)
class Limits:
    """The largest value a request (or the registered model) may set; each one's variable is LIMIT_PREFIX + NAME."""

    batch_size: int = 32  # decoded images held per request: up to 50 MB each (4096x4096)
    num_beams: int = 8  # generation rows per image
    max_new_tokens: int = 128  # decoding steps (the model's text positions bound it too)
    prompt_chars: int = 200  # prompt text (its tokens take text positions too)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Limits:
        return cls(**{f.name: _env_number(environ, LIMIT_PREFIX + f.name.upper(), int, f.default, low=1)
                      for f in fields(cls)})


def request_settings(registered: Mapping[str, Any], params: Mapping[str, Any] | None, limits: Limits,
                     prompt_positions: Callable[[str], int], positions: int) -> dict[str, Any]:
    """The registered settings with the request's params over them (None: not given), checked.

    `prompt_positions(prompt)`: text positions the decoder's start takes ([DEC] and the prompt's tokens);
    `positions`: the model's text positions, which the start and all but the last new token must fit in."""
    settings = {**registered, **{k: v for k, v in (params or {}).items() if v is not None}}
    for key in ("batch_size", "num_beams", "max_new_tokens", "min_new_tokens", "no_repeat_ngram_size"):
        _check(isinstance(settings[key], numbers.Integral) and not isinstance(settings[key], bool), key,
               settings[key], "must be a whole number")
        settings[key] = int(settings[key])  # numpy's integers too: the batch key is JSON
    for key in ("length_penalty", "repetition_penalty"):
        value = settings[key]
        _check(isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value), key, value,
               "must be a finite number")
        settings[key] = float(value)
    _check(isinstance(settings["prompt"], str), "prompt", settings["prompt"], "must be text")
    for key in ("batch_size", "num_beams", "max_new_tokens"):
        high = getattr(limits, key)
        _check(1 <= settings[key] <= high, key, settings[key],
               f"is outside this server's range of 1-{high} ({LIMIT_PREFIX}{key.upper()}): ask for 1-{high}")
    if len(settings["prompt"]) > limits.prompt_chars:
        raise BadRequest(f"the prompt's {len(settings['prompt'])} characters are more than this server's limit of "
                         f"{limits.prompt_chars} ({LIMIT_PREFIX}PROMPT_CHARS): shorten it")
    _check(0 <= settings["min_new_tokens"] <= settings["max_new_tokens"], "min_new_tokens", settings["min_new_tokens"],
           f"must be in [0, max_new_tokens={settings['max_new_tokens']}]")
    _check(settings["no_repeat_ngram_size"] >= 0, "no_repeat_ngram_size", settings["no_repeat_ngram_size"],
           "must be >= 0 (0: off)")
    _check(settings["repetition_penalty"] > 0, "repetition_penalty", settings["repetition_penalty"],
           "must be > 0 (1: no penalty)")
    start = max(1, prompt_positions(settings["prompt"]))  # [DEC] and the prompt's tokens
    _check(start + settings["max_new_tokens"] - 1 <= positions, "max_new_tokens", settings["max_new_tokens"],
           f"does not fit the model's {positions} text positions with this prompt (it takes {start}): ask for at "
           f"most {positions - start + 1}, or shorten the prompt")
    return settings


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise BadRequest(f"{key}={value!r} {rule}")


def _env_number(environ: Mapping[str, str], name: str, kind: type, default: Any, low: float) -> Any:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < low:
        raise ValueError(f"{name}={raw} is not valid: set a {'whole ' if kind is int else ''}number >= {low:g}, "
                         f"or unset it for the default {default}")
    return value
