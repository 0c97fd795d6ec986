"""`blipexp run`: resolve where state goes, load the data once, then train once or sweep, and summarise."""
from __future__ import annotations

from pathlib import Path

from . import tracking
from .data import CaptionData, load_data
from .spec import ExperimentSpec
from .train import TrialResult, train_trial


def run_experiment(spec: ExperimentSpec, home: Path, new_study: bool = False) -> int:
    """Train once, or sweep when the spec declares a search space."""
    tracking.configure(home)
    print(f"blipexp run {spec.name} ({'tiny' if spec.is_tiny else 'full'} profile)  model={spec.model}", flush=True)
    data = load_data(spec, home)
    print(describe_data(data), flush=True)
    tracking.use_experiment(spec.experiment_name, home)
    if spec.search_space():
        return _sweep(spec, data, home, new_study)
    result = train_trial(spec, data, home)
    print(summary(spec, result, home))
    return 0


def _sweep(spec: ExperimentSpec, data: CaptionData, home: Path, new_study: bool) -> int:
    from .sweep import run_sweep, summary_table

    result = run_sweep(spec, data, home, new=new_study)
    print("\n" + summary_table(result.study))
    if result.best_trial is None:
        print("\nno trial completed: nothing to register. Re-run the same command to resume.")
        return 1
    best = result.best_trial
    print(f"\nbest: trial {best.number}  {spec.objective_metric} {best.value:.4f}  model {result.best_model_dir}")
    print(f"  sweep run   {result.parent_run_id}  (MLflow experiment {spec.experiment_name!r})")
    print(f"  browse      {tracking.ui_command(home)}")
    return 0


def describe_data(data: CaptionData) -> str:
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(data.skipped.items())) or "none"
    lines = [f"data: {len(data.train)} train / {len(data.validation)} validation / {len(data.test)} test images "
             f"from {data.source}", f"      skipped: {skipped} (of {data.total})"]
    lines += [f"      warning: {w}" for w in data.warnings]
    return "\n".join(lines)


def summary(spec: ExperimentSpec, result: TrialResult, home: Path) -> str:
    key = spec.objective_metric

    def fmt(metrics: dict[str, float]) -> str:
        return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()) or "-"

    return "\n".join([
        "",
        f"done: {key} {result.objective:.4f} at epoch {result.best_epoch} "
        f"(untrained: {result.untrained.get(key, float('nan')):.4f})",
        f"  validation  {fmt(result.val_metrics)}",
        f"  test        {fmt(result.test_metrics)}",
        f"  run id      {result.run_id}  (MLflow experiment {spec.experiment_name!r})",
        f"  model       {result.model_dir}",
        f"  browse      {tracking.ui_command(home)}",
    ])
