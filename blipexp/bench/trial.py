"""One tiny `football_baseline` trial: its wall time, and the shares of it spent evaluating and writing to tracking.

Both shares come from seams the code offers, nothing is patched: evaluation from the Trainer's own
`<split>_runtime` metrics (every evaluation: each epoch's validation and the final test), read by a
TrainerCallback given to `train_trial`; tracking from `tracking.WRITES`, the time every write through
`tracking.Run` adds to (params, metrics, tags, tables, figures, dicts and the end status of a run).
"""
from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from .sizes import Size, log


class EvaluationClock(TrainerCallback):
    """Seconds the Trainer spent in evaluate(), summed from the `<split>_runtime` metric each evaluation reports."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def on_evaluate(self, args, state, control, metrics: dict[str, float] | None = None, **kwargs):
        self.seconds += sum(value for key, value in (metrics or {}).items() if key.endswith("_runtime"))


def bench_trial(size: Size, home: Path) -> dict:
    from .. import catalog, tracking
    from ..data import load_data
    from ..train import train_trial

    spec = catalog.load("football_baseline", catalog.experiments_dir()).tiny().replace(pitch_scenes=size.sweep_scenes)
    if size.name == "quick":
        spec = spec.replace(epochs=1)
    tracking.configure(home)
    tracking.use_experiment("bench-trial", home)
    data = load_data(spec, home)
    clock = EvaluationClock()
    writes_before = tracking.WRITES.seconds
    started = time.perf_counter()
    train_trial(spec, data, home, echo=False, callbacks=[clock])
    total = time.perf_counter() - started
    result = {"seconds": total, "epochs": spec.epochs, "evaluation_seconds": clock.seconds,
              "tracking_seconds": tracking.WRITES.seconds - writes_before}
    result["evaluation_share"] = result["evaluation_seconds"] / total
    result["tracking_share"] = result["tracking_seconds"] / total
    log(f"trial: {total:.1f}s, evaluation {result['evaluation_share']:.0%}, "
        f"tracking writes {result['tracking_share']:.1%}")
    return result
