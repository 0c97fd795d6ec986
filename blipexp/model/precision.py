"""precision=auto, decided on the machine that trains: a probe of fp32 against bf16 autocast on the model's own
layer sizes, cached under the home per machine, and a rule that takes bf16 only when it is clearly faster and
keeps quality.

Why measure: on CPUs with bf16 matrix instructions (avx512_bf16, AMX) bf16 autocast trained the tiny BLIP 1.5-1.7x
faster than fp32; on a CPU without them bf16 matrix products ran over 100x slower. GPUs keep a static rule (bf16
where supported, else fp16). fp16 is no CPU candidate: accelerate gives fp16 on
CPU no loss scaler, so small gradients would underflow to zero.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from ..runtime import environment, locks

PROBE_VERSION = 1  # bump when the probe changes: cached results of another version are measured again
MARGIN = 1.15  # bf16 must be this many times faster: the same probe has read 165 vs 165 and 381 vs 160 GFLOP/s here
MAX_ROWS = 512  # tokens per probed block: keeps the probe to seconds for BLIP-base (one image: 577 patches)
MIN_SECONDS = 0.2  # a timed pass repeats the blocks until this long: single small products are all noise
WARMUP, REPEATS = 1, 4  # unmeasured passes, then the best of this many timed ones per precision
SLOW = 10.0  # a precision whose warm-up pass is this many times fp32's is not timed further (no bf16 units)
# Whether a tiny run in this precision reaches fp32's validation objective within the noise between seeds
# (`python -m blipexp.bench.precision --quality`, BENCHMARKS.md: bf16 at or above fp32 on both seeds, 5.24 vs 4.58
# and 5.28 vs 5.27 CIDEr, while the seeds differ by 0.7).
KEEPS_QUALITY = {"bf16": True}

Shape = tuple[int, int, int]  # (rows, hidden size, intermediate size) of one MLP block
Probe = Callable[[list[Shape]], dict[str, float]]


@dataclass(frozen=True)
class Choice:
    precision: str  # fp32, bf16 or fp16: what training uses
    reason: str  # why, for the console and the run's `precision_reason`
    gflops: dict[str, float] = field(default_factory=dict)  # the probe's figure per precision (empty: no probe)


def machine() -> dict[str, str]:
    """What the probe's result depends on besides the shapes; when any of it changes the probe runs again."""
    cpu, flags = environment.cpu()
    return {"cpu": cpu, "cpu_flags": hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16],
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
            "torch": torch.__version__, "threads": str(torch.get_num_threads())}


def model_shapes(model) -> list[Shape]:
    """The MLP blocks of `model`'s vision encoder and text decoder, at MAX_ROWS tokens each. The widths are the
    model's own; the rows are fixed, so one probe serves every batch size and caption length (a training step's
    products have hundreds of rows or more, where throughput no longer depends on the count)."""
    vision, text = model.config.vision_config, model.config.text_config
    return [(MAX_ROWS, vision.hidden_size, vision.intermediate_size),
            (MAX_ROWS, text.hidden_size, text.intermediate_size)]


def probe(shapes: list[Shape], precisions: tuple[str, ...] = ("fp32", "bf16")) -> dict[str, float]:
    """GFLOP/s of forward + backward through MLP blocks of `shapes` under each precision's autocast (fp32 weights,
    as the Trainer trains): warm-up passes, then the best of REPEATS timed passes, precisions interleaved so that
    the machine's drift hits each alike."""
    small = [(min(rows, 64), hidden, inner) for rows, hidden, inner in shapes]
    full, screen = _blocks(shapes), _blocks(small)
    # A precision without matrix units here (bf16 on many CPUs) runs 100x slower: a small screen keeps it from
    # taking minutes, and it is reported at the screen's speed.
    reference = min(_seconds(screen, precisions[0]) for _ in range(WARMUP))
    screened = {p: _seconds(screen, p) for p in precisions[1:]}
    slow = {p: s for p, s in screened.items() if s > SLOW * reference}
    best = {p: min(_seconds(full, p) for _ in range(WARMUP)) for p in precisions if p not in slow}
    for _ in range(REPEATS):
        for p, seconds in best.items():
            best[p] = min(seconds, _seconds(full, p))
    rates = {p: _flops(shapes) / s / 1e9 for p, s in best.items()}
    rates |= {p: _flops(small) / s / 1e9 for p, s in slow.items()}
    return {p: rates[p] for p in precisions}


def _blocks(shapes: list[Shape]) -> list[tuple[torch.Tensor, nn.Module]]:
    with torch.random.fork_rng():  # the caller's training run draws the same random numbers, probed or not
        torch.manual_seed(0)
        return [(torch.randn(rows, hidden, requires_grad=True),
                 nn.Sequential(nn.Linear(hidden, inner), nn.GELU(), nn.Linear(inner, hidden)))
                for rows, hidden, inner in shapes]


def _flops(shapes: list[Shape]) -> float:
    return sum(3 * 2 * 2 * rows * hidden * inner for rows, hidden, inner in shapes)  # backward: twice the forward


def _seconds(blocks: list[tuple[torch.Tensor, nn.Module]], precision: str) -> float:
    """Seconds per forward + backward through every block, fp32 weights under the precision's autocast (as the
    Trainer trains), averaged over as many passes as fill MIN_SECONDS."""
    count, started = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - started < MIN_SECONDS:
        for x, block in blocks:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = block(x)
            out.float().sum().backward()
            x.grad = None
            block.zero_grad(set_to_none=True)
        count += 1
    return (time.perf_counter() - started) / count


def cached_probe(home: Path, shapes: list[Shape], run_probe: Probe = probe) -> tuple[dict[str, float], bool]:
    """The probe's figures for `shapes` on this machine, and whether they came from <home>/cache/precision.json.
    Keyed by the machine (CPU model and flags, GPU, torch, threads), the shapes and PROBE_VERSION; parallel sweep
    workers and DDP ranks take a lock, so one of them probes and the others read its result."""
    key = {"version": PROBE_VERSION, **machine(), "shapes": [list(s) for s in shapes]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(home) / "cache" / "precision.json"
    with locks.hold(home, "precision-probe"):
        entries = _read(path)
        if digest in entries:
            return entries[digest]["gflops"], True
        gflops = run_probe(shapes)
        measured = datetime.datetime.now().isoformat(timespec="seconds")
        entries[digest] = {"key": key, "gflops": gflops, "measured": measured}
        _write(path, entries)
    return gflops, False


def decide(gflops: dict[str, float], keeps_quality: dict[str, bool] = KEEPS_QUALITY, margin: float = MARGIN) -> Choice:
    """bf16 when the probe measured it at least `margin` times fp32's speed and it keeps quality; else fp32."""
    speedup = gflops["bf16"] / gflops["fp32"]
    figures = f"fp32 in the probe ({gflops['bf16']:.3g} vs {gflops['fp32']:.3g} GFLOP/s)"
    if speedup < margin:
        return Choice("fp32", f"fp32: bf16 only {speedup:.2f}x {figures}, below the {margin:g}x needed", gflops)
    if not keeps_quality.get("bf16", False):
        return Choice("fp32", f"fp32: bf16 {speedup:.2f}x {figures} but it misses fp32's validation objective "
                      "(BENCHMARKS.md)", gflops)
    return Choice("bf16", f"bf16: {speedup:.2f}x {figures}", gflops)


def choose(requested: str, model, home: Path, run_probe: Probe = probe) -> Choice:
    """The precision a run trains in: the spec's when set; for "auto" on a GPU bf16 where supported, else fp16;
    on a CPU the (cached) probe on `model`'s shapes and `decide`."""
    if requested != "auto":
        return Choice(requested, f"{requested}: set in the spec")
    if torch.cuda.is_available():
        chosen = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return Choice(chosen, f"{chosen}: GPU {torch.cuda.get_device_name(0)} (bf16 where supported, else fp16)")
    gflops, cached = cached_probe(home, model_shapes(model), run_probe)
    choice = decide(gflops)
    return Choice(choice.precision, choice.reason + (" (cached)" if cached else ""), gflops)


def used(spec, home: Path) -> str:
    """The precision a run of `spec` trains in, before any model is loaded: what keys (untrained scores, resuming) and
    version tags name, never "auto" (workers on CPUs with and without bf16 units would share numbers made in
    different precisions). The probe reads the model's config alone: the same shapes, the same cached figures as
    `choose` on the loaded model."""
    if spec.precision != "auto":
        return spec.precision
    return choose("auto", SimpleNamespace(config=_config(spec)), home).precision


def _config(spec):
    """The model's BlipConfig without its weights."""
    from transformers import BlipConfig

    from ..experiment.presets import TINY_MODEL, TINY_RANDOM_MODEL
    from .tiny import tiny_config

    if spec.model in (TINY_MODEL, TINY_RANDOM_MODEL):  # the widths are fixed; the vocabulary does not matter here
        return tiny_config(vocab_size=64, bos_token_id=1, sep_token_id=2, pad_token_id=0)
    return BlipConfig.from_pretrained(spec.model, revision=spec.model_revision)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: a cache, measured again
        return {}


def _write(path: Path, entries: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(entries, handle, indent=1)
    os.replace(handle.name, path)  # atomic: a reader never sees half a file
