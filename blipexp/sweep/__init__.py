"""Optuna sweeps: a study (study.py: storage, lock, sampler; pruner.py: its pruner), recovery from dead workers
(recovery.py), the trial loop (loop.py), what a sweep reports (report.py), confirmation runs with fresh seeds
(confirm.py), the choice of the configuration to register (choose.py), the paired pruner's evidence (paired.py) and
optuna-dashboard on a study (dashboard.py). Imports every layer below cli: above the registry too, since the sweep
registers the chosen configuration after its confirmation and tags the version with how it was chosen. What
cli/run.py, the other commands and the benchmark use, imported when first used: the trial loop imports training
(torch, transformers, ~8 s), which `blipexp dashboard` (dashboard.py, study.py) does not need."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_HOMES = {"SweepResult": "loop", "keep_models": "loop", "run_sweep": "loop", "retry": "recovery",
          "format_param": "report", "log_separation": "report", "range_edge_advice": "report",
          "separation": "report", "separation_line": "report", "summary_table": "report",
          **dict.fromkeys(["FINAL_STATES", "STORAGE_ENV", "counted", "open_study", "optuna_storage", "sampler",
                           "storage_url", "study_lock", "study_name", "suggest", "top_trials"], "study")}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


if TYPE_CHECKING:  # what type checkers and editors read
    from .loop import SweepResult, keep_models, run_sweep
    from .recovery import retry
    from .report import format_param, log_separation, range_edge_advice, separation, separation_line, summary_table
    from .study import (
                        FINAL_STATES,
                        STORAGE_ENV,
                        counted,
                        open_study,
                        optuna_storage,
                        sampler,
                        storage_url,
                        study_lock,
                        study_name,
                        suggest,
                        top_trials,
    )
