"""Benchmark: training steps of the tiny BLIP in fp32 vs bf16 autocast on this machine's CPU.

`python -m blipexp.bench.precision` prints samples/s for each, twice (the order alternates to expose drift).
It backs precision=auto's choice of fp32 on CPU (see trainer.resolve_precision).
"""
from __future__ import annotations

import time

import torch

from ..data.collator import CaptionCollator
from ..data.pitch import scenes
from ..modeling import build_tiny_model, build_tiny_processor

BATCH, WARMUP, STEPS = 32, 3, 20


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


def main() -> None:
    drawn = scenes(BATCH, seed=0)
    processor = build_tiny_processor(scene.caption for scene, _ in drawn)
    pixels = processor.image_processor(images=[image for _, image in drawn], return_tensors="pt")["pixel_values"]
    collator = CaptionCollator(processor.tokenizer, processor.tokenizer.bos_token_id, 24)
    batch = collator([{"pixel_values": pixels[i], "caption": drawn[i][0].caption} for i in range(BATCH)])
    print(f"tiny BLIP, batch {BATCH}, {STEPS} steps after {WARMUP} warm-up, {torch.get_num_threads()} threads")
    for mode in ("fp32", "bf16", "fp32", "bf16"):
        print(f"  {mode}: {samples_per_second(mode, batch, processor):7.1f} samples/s", flush=True)


if __name__ == "__main__":
    main()
