"""Benchmark: gradient checkpointing and torch.compile on the tiny BLIP's training steps (and compile on generation).

`python -m blipexp.bench.memory [--batch N]` runs each mode in a fresh process (so its peak RSS is its own) and
prints seconds per step and how far the step raised the process's peak memory above the model's. It backs the
spec's `gradient_checkpointing` and `torch_compile` help and BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

import torch

from ..data.collator import CaptionCollator
from ..data.pitch import scenes
from ..model.tiny import build_tiny_model, build_tiny_processor

WARMUP, STEPS = 2, 10
MODES = ("plain", "checkpointing", "compile")


def _batch(size: int):
    drawn = scenes(size, seed=0)
    processor = build_tiny_processor(scene.caption for scene, _ in drawn)
    pixels = processor.image_processor(images=[image for _, image in drawn], return_tensors="pt")["pixel_values"]
    collator = CaptionCollator(processor.tokenizer, processor.tokenizer.bos_token_id, 24)
    batch = collator([{"pixel_values": pixels[i], "caption": drawn[i][0].caption} for i in range(size)])
    return processor, {k: batch[k] for k in ("pixel_values", "input_ids", "attention_mask", "labels")}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(mode: str, size: int) -> dict:
    """One mode, in this process: what the Trainer does for it (activation_checkpointing_enable; torch.compile)."""
    processor, batch = _batch(size)
    model = build_tiny_model(processor, seed=0)
    if mode == "checkpointing":
        model.activation_checkpointing_enable()
    step_model = torch.compile(model) if mode == "compile" else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    before = _peak_mb()

    def step() -> None:
        step_model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    started = time.perf_counter()
    step()
    first = time.perf_counter() - started  # compile happens here
    for _ in range(WARMUP - 1):
        step()
    started = time.perf_counter()
    for _ in range(STEPS):
        step()
    result = {"mode": mode, "first_step_s": first, "step_s": (time.perf_counter() - started) / STEPS,
              "peak_rise_mb": _peak_mb() - before}
    if mode == "compile":  # generate() is not the compiled forward: compile the decoder's forward as the model's
        model.eval()
        model.text_decoder.forward = torch.compile(model.text_decoder.forward)
        pixels = batch["pixel_values"][:8]
        with torch.no_grad():
            started = time.perf_counter()
            model.generate(pixel_values=pixels, max_new_tokens=20)
            result["generate_first_s"] = time.perf_counter() - started
            started = time.perf_counter()
            model.generate(pixel_values=pixels, max_new_tokens=20)
            result["generate_s"] = time.perf_counter() - started
    return result


def _child(mode: str, size: int, queue) -> None:
    try:
        queue.put(measure(mode, size))
    except Exception as exc:  # a mode that fails here is reported, not fatal to the others
        queue.put({"mode": mode, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m blipexp.bench.memory")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args(argv)
    print(f"tiny BLIP, batch {args.batch}, {STEPS} steps after {WARMUP} warm-up, {torch.get_num_threads()} threads")
    context = multiprocessing.get_context("spawn")
    for mode in args.modes:
        queue = context.Queue()
        child = context.Process(target=_child, args=(mode, args.batch, queue))
        child.start()
        result = queue.get()
        child.join()
        print("  " + "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()),
              flush=True)


if __name__ == "__main__":
    main()
