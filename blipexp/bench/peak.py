"""The machine's limit: sustained matrix-multiply throughput, fp32 and bf16 (MFU is measured against it)."""
from __future__ import annotations

import time

import torch

from .sizes import Size, log


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


def bench_peak(size: Size) -> dict:
    # The best of two sizes: larger products run closer to the limit (here 2048: ~130, 4096: ~160 GFLOP/s).
    # bf16 at 1024 only: CPUs without bf16 matrix units run it orders of magnitude slower.
    sizes = (size.matmul_n // 2, size.matmul_n)
    fp32 = {n: matmul_peak(torch.float32, n, size.matmul_seconds) for n in sizes}
    best = max(fp32, key=fp32.get)
    result = {"fp32_gflops": fp32[best], "fp32_size": best,
              "bf16_gflops": matmul_peak(torch.bfloat16, min(size.matmul_n, 1024), size.matmul_seconds)}
    log(f"peak: fp32 {result['fp32_gflops']:.0f} GFLOP/s ({best}x{best} matmul), bf16 {result['bf16_gflops']:.1f} "
        f"GFLOP/s, {torch.get_num_threads()} threads")
    return result
