"""Optuna sweeps: a study (study.py: storage, lock, sampler; pruner.py: its pruner), recovery from dead workers
(recovery.py), the trial loop (loop.py), what a sweep reports (report.py), confirmation runs with fresh seeds
(confirm.py), the choice of the configuration to register (choose.py), the paired pruner's evidence (paired.py) and
optuna-dashboard on a study (dashboard.py). Imports every layer below cli: above the registry too, since the sweep
registers the chosen configuration after its confirmation and tags the version with how it was chosen. What
cli/run.py, the other commands and the benchmark use:"""
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

__all__ = ["FINAL_STATES", "STORAGE_ENV", "SweepResult", "counted", "format_param", "keep_models", "log_separation",
           "open_study", "optuna_storage", "range_edge_advice", "retry", "run_sweep", "sampler", "separation",
           "separation_line", "storage_url", "study_lock", "study_name", "suggest", "summary_table", "top_trials"]
