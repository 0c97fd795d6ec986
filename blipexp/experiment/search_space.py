"""A sweep's search space: its dimensions (FloatRange, IntRange, Choice), and the check that a spec's space names
real fields and suggests values of each field's type (run when the spec is built, not when each trial starts).
How a dimension is sampled is Optuna's business: sweep/study.py `suggest`."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from . import trainer_args
from .fields import matches, require, type_name


@dataclass(frozen=True)
class FloatRange:
    """A float dimension of a search space; `log` samples on a log scale."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class IntRange:
    """An integer dimension of a search space, bounds inclusive."""

    low: int
    high: int
    step: int = 1


@dataclass(frozen=True)
class Choice:
    """A categorical dimension of a search space."""

    options: tuple


SearchDim = FloatRange | IntRange | Choice


def check_space(space: dict[str, SearchDim], field_types: dict[str, Any]) -> None:
    """Raise ValueError naming the dimension and the fix: an unknown field, empty or reversed bounds, a log scale
    from 0, or values the field's type does not take. `trainer.<name>` keys name a Trainer argument."""
    for key, dim in space.items():
        if key.startswith(trainer_args.PREFIX):
            trainer_args.check_name(key[len(trainer_args.PREFIX):])
        elif key not in field_types:
            close = difflib.get_close_matches(key, field_types, n=3, cutoff=0.5)
            raise ValueError(f"search space names unknown field {key!r}"
                             + (f"; did you mean {', '.join(close)}?" if close else ""))
        _check_bounds(key, dim)
        if key in field_types:
            _check_type(key, dim, field_types[key])


def _check_bounds(key: str, dim: SearchDim) -> None:
    name = f"search_space[{key!r}]"
    if isinstance(dim, (FloatRange, IntRange)):
        require(dim.low < dim.high, name, (dim.low, dim.high), "needs low < high")
        if isinstance(dim, FloatRange) and dim.log:
            require(dim.low > 0, name, dim.low, "log scale needs low > 0")
    elif isinstance(dim, Choice):
        require(len(dim.options) >= 1, name, dim.options, "needs at least one option")
    else:
        raise ValueError(f"{name} is {dim!r}: use FloatRange, IntRange or Choice")


def _check_type(key: str, dim: SearchDim, hint: Any) -> None:
    """What a dimension suggests must fit the field's type: a FloatRange over `epochs` fails here."""
    values = {FloatRange: lambda d: [float(d.low), float(d.high)], IntRange: lambda d: [int(d.low), int(d.high)],
              Choice: lambda d: list(d.options)}[type(dim)](dim)
    wrong = [value for value in values if not matches(value, hint)]
    if not wrong:
        return
    if isinstance(dim, Choice):
        fix = f"options that are {type_name(hint)}"
    elif hint is int:
        fix = f"IntRange({int(dim.low)}, {int(dim.high)})"
    else:
        fix = f"Choice(...) of {type_name(hint)} values"
    raise ValueError(f"search_space[{key!r}] is a {type(dim).__name__}, which suggests {wrong[0]!r}, but {key} "
                     f"takes {type_name(hint)}: use {fix}")
