"""One tiny `football_baseline` trial: its wall time, and the shares of it spent evaluating and writing to tracking.

Both shares come from seams the code offers, nothing is patched: evaluation from the Trainer's own
`<split>_runtime` metrics (every evaluation: each epoch's validation and the final test), read by a
TrainerCallback given to `train_trial`; tracking from `tracking.WRITES`, the time every write through
`tracking.Run` adds to (params, metrics, tags, tables, figures, dicts and the end status of a run).

System metrics (on by default) cost the CPU time of MLflow's sampling thread, "SystemMetricsMonitor": read from
/proc per thread while the trial runs. Its share of the trial's wall time bounds the time it can add (it could at
most take that much from training), with none of the noise of comparing two timed trials.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from transformers import TrainerCallback

from .sampling import Sampler
from .sizes import Size, log


class EvaluationClock(TrainerCallback):
    """Seconds the Trainer spent in evaluate(), summed from the `<split>_runtime` metric each evaluation reports."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def on_evaluate(self, args, state, control, metrics: dict[str, float] | None = None, **kwargs):
        self.seconds += sum(value for key, value in (metrics or {}).items() if key.endswith("_runtime"))


def bench_trial(size: Size, home: Path) -> dict:
    from .. import tracking
    from ..data import load_data
    from ..experiment import catalog
    from ..training.train import train_trial

    spec = catalog.load("football_baseline", catalog.experiments_dir()).tiny().replace(pitch_scenes=size.sweep_scenes)
    spec = spec.with_overrides(size.overrides)
    if size.name == "quick":
        spec = spec.replace(epochs=1)
    tracking.configure(home)
    tracking.use_experiment("bench-trial", home)
    data = load_data(spec, home)
    clock = EvaluationClock()
    writes_before, kinds_before = tracking.WRITES.seconds, dict(tracking.WRITES.by_kind)
    started = time.perf_counter()
    with ThreadCpu("SystemMetricsMonitor") as monitor:
        train_trial(spec.replace(system_metrics=True), data, home, echo=False, callbacks=[clock])
    total = time.perf_counter() - started
    result = {"seconds": total, "epochs": spec.epochs, "evaluation_seconds": clock.seconds,
              "tracking_seconds": tracking.WRITES.seconds - writes_before,
              "tracking_by_kind": {kind: spent - kinds_before.get(kind, 0.0)
                                   for kind, spent in tracking.WRITES.by_kind.items()},
              "system_metrics_cpu_seconds": monitor.seconds, "system_metrics_seen": monitor.seen}
    result["evaluation_share"] = result["evaluation_seconds"] / total
    result["tracking_share"] = result["tracking_seconds"] / total
    result["system_metrics_share"] = monitor.seconds / total
    by_kind = sorted(result["tracking_by_kind"].items(), key=lambda item: -item[1])
    log(f"trial: {total:.1f}s, evaluation {result['evaluation_share']:.0%}, tracking writes "
        f"{result['tracking_share']:.1%} ({', '.join(f'{kind} {spent:.2f}s' for kind, spent in by_kind)}), "
        f"system metrics thread {monitor.seconds:.2f}s CPU ({result['system_metrics_share']:.2%})")
    return result


class ThreadCpu(Sampler):
    """CPU seconds (user + system) used by this process's threads named `name`, polled from /proc until exit."""

    def __init__(self, name: str, every_s: float = 0.2) -> None:
        super().__init__(every_s)
        self.name = name
        self.by_thread: dict[int, float] = {}

    @property
    def seconds(self) -> float:
        return sum(self.by_thread.values())

    @property
    def seen(self) -> bool:
        return bool(self.by_thread)

    def sample(self) -> None:
        for thread in threading.enumerate():
            if thread.name == self.name and thread.native_id is not None:
                used = _cpu_seconds(thread.native_id)
                if used is not None:  # the last reading before the thread ends is the one kept
                    self.by_thread[thread.native_id] = used


def _cpu_seconds(tid: int) -> float | None:
    try:
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # ended, or no /proc (not Linux)
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)
