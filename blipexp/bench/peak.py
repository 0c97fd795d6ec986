"""The machine's limit: sustained matrix-multiply throughput, fp32 and bf16 (MFU is measured against it).

One measurement is not enough: this VM's rate drifts (fp32 read 100 GFLOP/s in one run, 128-165 in others), and
a limit measured low puts MFU above 100%. So each precision is measured at several sizes, several windows each,
before and after the timed paths; the limit is the best window, and the spread is reported beside it.
"""
from __future__ import annotations

import time

import torch

from .sizes import Size, log

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
WINDOWS = 3  # timed windows per size: the best is kept, the lowest shows the spread


def matmul_peak(dtype: torch.dtype, n: int, seconds: float) -> float:
    """Sustained GFLOP/s of n x n matrix products, after a warm-up."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=out)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b, out=out)
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - started) / 1e9


def measure(size: Size) -> dict[str, dict[int, list[float]]]:
    """GFLOP/s per precision, size and window. Sizes ascend (a quarter, half and all of size.matmul_n); a size is
    skipped when the rate so far says one product would outlast a window (bf16 on CPUs without bf16 units runs
    about 1 GFLOP/s: a 4096 product would take minutes)."""
    window = size.matmul_seconds / WINDOWS
    sizes = (size.matmul_n // 4, size.matmul_n // 2, size.matmul_n)
    result: dict[str, dict[int, list[float]]] = {}
    for name, dtype in PRECISIONS.items():
        result[name] = {}
        for n in sizes:
            rates = [r for runs in result[name].values() for r in runs]
            if rates and 2 * n**3 / (max(rates) * 1e9) > window:
                break
            result[name][n] = [matmul_peak(dtype, n, window) for _ in range(WINDOWS)]
    return result


def summarize(before: dict, after: dict | None = None) -> dict:
    """The limit per precision: the best window of both probes, at which size, the lowest window at that size
    and each probe's best (the spread a reader weighs MFU against)."""
    summary: dict = {"windows": WINDOWS, "before": before, "after": after}
    for name in PRECISIONS:
        probes = [p[name] for p in (before, after) if p]
        best, n = max((max(runs), n) for probe in probes for n, runs in probe.items())
        summary[f"{name}_gflops"] = best
        summary[f"{name}_size"] = n
        summary[f"{name}_low"] = min(r for probe in probes for r in probe.get(n, []))
        summary[f"{name}_before"] = max(r for runs in before[name].values() for r in runs)
        summary[f"{name}_after"] = max(r for runs in after[name].values() for r in runs) if after else None
    return summary


def bench_peak(size: Size, when: str) -> dict:
    result = measure(size)
    for name, runs in result.items():
        figures = ", ".join(f"{n}: {min(r):.0f}-{max(r):.0f}" for n, r in runs.items())
        log(f"peak ({when}): {name} GFLOP/s by size {figures}; {torch.get_num_threads()} threads")
    return result
