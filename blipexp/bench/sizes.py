"""How big the benchmark runs: the full measurement or the --quick smoke check; and its console output."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Size:
    """How big each section runs: the full benchmark or the --quick smoke check."""

    name: str
    model: str  # "base": BLIP-base architecture; "tiny": blipexp's tiny preset architecture
    batch: int
    warmup_steps: int
    steps: int
    captions: int  # generation benchmark
    new_tokens: int
    matmul_n: int
    matmul_seconds: float
    sweep_trials: int
    sweep_scenes: int
    sweep_seeds: tuple[int, ...]  # the compared sweeps run once per seed: one sweep's best is one sample, and
    # six seeds put the mean's standard error near 0.1 CIDEr (spread of one sweep's best: 0.2-0.4)
    overrides: tuple[str, ...]  # `--set` overrides of every tiny trial, run and evaluation the benchmark starts


FULL = Size("full", "base", batch=2, warmup_steps=2, steps=3, captions=8, new_tokens=20, matmul_n=4096,
            matmul_seconds=3.0, sweep_trials=8, sweep_scenes=640, sweep_seeds=(42, 1, 2, 3, 4, 5), overrides=())
# the smoke check: each path once, at the least size that runs it; captions of 4 tokens (a count, a colour, a noun),
# as generating them is most of a tiny trial's time; matmul windows of 20 ms, in which bf16 without bf16 units still
# runs the smaller sizes and skips the largest
QUICK = Size("quick", "tiny", batch=2, warmup_steps=1, steps=1, captions=2, new_tokens=2, matmul_n=512,
             matmul_seconds=0.06, sweep_trials=1, sweep_scenes=24, sweep_seeds=(42,), overrides=("max_new_tokens=4",))


def log(message: str) -> None:
    print(message, flush=True)


# photos per folder, batches timed per loader, up to which size the old eager path is run for comparison, how often
# peak memory is sampled (reading a process tree's PSS costs CPU: the smoke check reads less), and how many times
# loading and a run are timed (the second time reuses the first's survey; the smoke check's code is the same once)
DATA_SIZES = {"full": dict(sizes=[1000, 5000, 20000], batches=40, eager_up_to=1000, every_s=0.1, attempts=2),
              "quick": dict(sizes=[24], batches=2, eager_up_to=24, every_s=1.0, attempts=1)}

# serving: concurrent clients, requests per configuration (shared among its clients, at least min_requests each: the
# percentiles need samples), pitch scenes to train on, and the good load kept up while malformed requests are sent
SERVING_SIZES = {"full": dict(clients=[1, 4, 16, 32], requests=96, min_requests=3, scenes=120, malformed_clients=4,
                              malformed_requests=6),
                 "quick": dict(clients=[1, 2], requests=2, min_requests=1, scenes=24, malformed_clients=2,
                               malformed_requests=1)}
