"""Progress on the console: tqdm bars in a terminal; elsewhere (a log file, a pipe), where each redraw of a bar
would be one more line, one line when a phase ends."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def on_terminal() -> bool:
    """Whether bars can be drawn: tqdm draws on stderr, and only a terminal overwrites a line in place."""
    return sys.stderr.isatty()


class _Line:
    """A bar's stand-in outside a terminal: counts, keeps the last postfix, draws nothing."""

    def __init__(self) -> None:
        self.n = 0
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{key} {value}" for key, value in values.items())


@contextmanager
def bar(desc: str, total: int, unit: str, show: bool = True, **options: Any) -> Iterator[Any]:
    """A tqdm bar (`options` are tqdm's) in a terminal; elsewhere one line when the phase ends without an error,
    e.g. "vision features (train): 48/48 img in 2.1 s". Nothing at all when `show` is False."""
    from tqdm.auto import tqdm

    if not show or on_terminal():
        with tqdm(total=total, desc=desc, unit=unit, disable=not show, **options) as drawn:
            yield drawn
        return
    line, started = _Line(), time.perf_counter()
    yield line
    postfix = f" ({line.postfix})" if line.postfix else ""
    print(f"{desc}: {line.n}/{total} {unit} in {time.perf_counter() - started:.1f} s{postfix}", flush=True)


@contextmanager
def no_weight_progress_bars() -> Iterator[None]:
    """transformers draws a bar each time it reads or writes weights ("Loading weights", "Writing model shards"):
    a line on the console per trial, per epoch's checkpoint and per registration, for local files read or written
    in a fraction of a second. Off around local reads and writes only; downloads keep their bars."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
