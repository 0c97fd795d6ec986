"""Run names a person can tell apart in the MLflow UI: the experiment, the run's role (`trial 3`, `sweep`), the
fields it trains otherwise than its experiment does, and a short id (the run id's start), e.g.
`football_lr_sweep · trial 3 · lr=2e-4 · 8 ep · 3fa2c1` or `football_baseline · seed=7 · 9b07de`. The experiment's
name is also the run's tag blipexp.experiment (run_tags)."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

from ..experiment.spec import ExperimentSpec

SEPARATOR = " · "
NAME_TAG = "mlflow.runName"  # MLflow keeps a run's name in this tag: setting it renames the run
SHORT_ID = 6  # characters of the run id: enough to tell a home's runs apart, short enough to read
MAX_FIELDS = 5  # changed fields named; more are counted ("+2 more")
MAX_LENGTH = 240  # MLflow stores a run name in 250 characters
# fields that change neither what is trained nor how it is scored: never named
UNNAMED = frozenset({"mlflow_experiment", "registered_model", "n_trials", "prune", "confirm_seeds", "confirm_top",
                     "system_metrics", "dataloader_workers", "sample_captions", "eval_batch_size",
                     "cache_vision_features"})
SHORT = {"learning_rate": "lr={}", "epochs": "{} ep"}  # how the most searched fields read; others as key=value


def run_name(spec: ExperimentSpec, role: str = "", *, base: ExperimentSpec | None = None,
             always: Iterable[str] = ()) -> str:
    """'<experiment> · <role> · <changed fields>': the fields `spec` holds otherwise than `base` (default: its
    experiment's own values, in the profile closer to it), those in `always` (e.g. a sweep's searched fields)
    first and whatever their value. The short id is added once the run exists (with_short_id)."""
    always = list(always)
    changed = [key for key in _differing(spec, base or _defaults(spec)) if key not in always]
    shown = [_field(key, spec.value(key)) for key in [*always, *changed]]
    if len(shown) > MAX_FIELDS:
        shown = [*shown[:MAX_FIELDS], f"+{len(shown) - MAX_FIELDS} more"]
    return SEPARATOR.join(part for part in (spec.name or type(spec).__name__, role, *shown) if part)


def with_short_id(name: str, run_id: str) -> str:
    return f"{name[:MAX_LENGTH - SHORT_ID - len(SEPARATOR)]}{SEPARATOR}{run_id[:SHORT_ID]}"


def _defaults(spec: ExperimentSpec) -> ExperimentSpec:
    """The experiment's own values, with the tiny profile applied when that is closer to `spec` (--tiny)."""
    plain = type(spec)()
    return min((plain, plain.tiny()), key=lambda base: len(_differing(spec, base)))


def _differing(spec: ExperimentSpec, base: ExperimentSpec) -> list[str]:
    """The named fields (and trainer entries) `spec` holds otherwise than `base`, in field order."""
    mine, theirs = spec.params(), base.params()
    return [key for key in mine if key not in UNNAMED and mine[key] != theirs.get(key)]


def _field(key: str, value: Any) -> str:
    return SHORT.get(key, key + "={}").format(_value(value))


def _value(value: Any) -> str:
    """A value short enough for a name: floats in 3 significant digits (small ones as 2e-4), a path by its last part."""
    if isinstance(value, float) and not isinstance(value, bool):
        if value != 0 and abs(value) < 1e-2:
            mantissa, exponent = f"{value:.2e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:.3g}"
    text = str(value)
    if "/" in text:
        text = PurePath(text).name or text
    return text if len(text) <= 24 else text[:23] + "…"

