"""Benchmark: training steps of the tiny BLIP in fp32 vs bf16 autocast on this machine's CPU, beside the probe
that `precision=auto` decides by (blipexp.model.precision: one home for probing; this script only prints it).

`python -m blipexp.bench.precision` prints the probe's figures and choice for the tiny BLIP at batch 32, then
samples/s of real training steps in each precision, twice (the order alternates to expose drift): the probe's
verdict should agree with the real steps'. `--quality` trains the tiny `football_baseline` in fp32 and bf16 for
two seeds and prints each validation objective: the check behind precision.KEEPS_QUALITY.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ..data.collator import CaptionCollator
from ..data.pitch import scenes
from ..model import precision
from ..model.tiny import build_tiny_model, build_tiny_processor

BATCH, WARMUP, STEPS = 32, 3, 20
SEEDS = (0, 1)


def samples_per_second(mode: str, batch: dict, processor) -> float:
    model = build_tiny_model(processor, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    for _ in range(WARMUP):  # the first steps are slower (allocator, kernels): not measured
        step()
    started = time.perf_counter()
    for _ in range(STEPS):
        step()
    return BATCH * STEPS / (time.perf_counter() - started)


def speed() -> None:
    drawn = scenes(BATCH, seed=0)
    processor = build_tiny_processor(scene.caption for scene, _ in drawn)
    pixels = processor.image_processor(images=[image for _, image in drawn], return_tensors="pt")["pixel_values"]
    collator = CaptionCollator(processor.tokenizer, processor.tokenizer.bos_token_id, 24)
    batch = collator([{"pixel_values": pixels[i], "caption": drawn[i][0].caption} for i in range(BATCH)])
    shapes = precision.model_shapes(build_tiny_model(processor, seed=0))
    figures = precision.probe(shapes)
    print(f"probe (blipexp.model.precision) on the tiny BLIP's blocks {shapes}: "
          + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in figures.items()) + f" -> {precision.decide(figures).reason}")
    print(f"tiny BLIP, batch {BATCH}, {STEPS} steps after {WARMUP} warm-up, {torch.get_num_threads()} threads")
    for mode in ("fp32", "bf16", "fp32", "bf16"):
        print(f"  {mode}: {samples_per_second(mode, batch, processor):7.1f} samples/s", flush=True)


def quality() -> None:
    from .. import tracking
    from ..data import load_data
    from ..experiment import catalog
    from ..training.train import train_trial

    home = Path(tempfile.mkdtemp(prefix="blipexp-precision-"))
    tracking.configure(home)
    tracking.use_experiment("precision-quality", home)
    spec = catalog.load("football_baseline", catalog.experiments_dir()).tiny()
    data = load_data(spec, home)
    print(f"tiny football_baseline ({spec.epochs} epochs), best validation {spec.objective_metric} per seed:")
    for seed in SEEDS:
        for mode in ("fp32", "bf16"):
            result = train_trial(spec.replace(precision=mode, seed=seed), data, home, echo=False)
            print(f"  seed {seed} {mode}: {result.objective:.4f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m blipexp.bench.precision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quality", action="store_true", help="tiny runs in fp32 and bf16: validation objectives")
    quality() if parser.parse_args(argv).quality else speed()


if __name__ == "__main__":
    main()
