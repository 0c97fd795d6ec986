"""Training throughput: the notebook's loop, a plain loop and blipexp's Trainer path on the BLIP architecture
(random init: no download), full fine-tuning / frozen encoder / cached features; FLOPs per sample (MFU: report.py).

blipexp's paths train in the precision `precision=auto` picks on this machine (its probe is run and reported);
the plain loop uses the same autocast, the notebook's loop fp32."""
from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import TrainerCallback

from ..data.collator import CaptionCollator
from ..data.features import CaptionDataset
from ..experiment.spec import ExperimentSpec
from ..model import precision
from ..model.feature_cache import PassThroughVision, encode_vision
from .sizes import Size, log
from .synthetic import CAPTION_TOKENS, NOTEBOOK_PAD, build_model, synthetic_data, synthetic_tokenizer


def notebook_batch(tokenizer, pixels: torch.Tensor, captions: list[str], pad_to: int) -> dict:
    """What the notebook's dataset + processor hand the model: every caption padded to max_length."""
    text = tokenizer(captions, padding="max_length", max_length=pad_to, return_tensors="pt")
    return {"pixel_values": pixels, "input_ids": text["input_ids"], "attention_mask": text["attention_mask"],
            "labels": text["input_ids"]}  # the notebook's labels=input_ids: pads are trained on too


def timed_steps(step: Callable[[], None], warmup: int, steps: int) -> float:
    """Seconds for `steps` calls after `warmup` unmeasured ones (the first steps pay allocator and kernel set-up)."""
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - started


def loop_step(model, batches: Iterator[dict], optimizer, bf16: bool = False) -> Callable[[], None]:
    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**next(batches)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def flops_per_sample(model, batch: dict) -> float:
    """Model FLOPs of one training step (forward + backward) divided by the batch size."""
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(batch["pixel_values"])


class _StepClock(TrainerCallback):
    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def trainer_samples_per_second(model, dataset, collator, size: Size, batch: int, out: Path,
                               used: str) -> tuple[float, list[dict]]:
    """blipexp's Trainer and arguments (fused AdamW, precision `used`), only the step count and evaluation changed."""
    from ..training.trainer import CaptionTrainer, training_arguments

    spec = ExperimentSpec().replace(model="tiny", dataset="pitch", learning_rate=5e-5, train_batch_size=batch,
                                    precision=used)
    args = dataclasses.replace(
        training_arguments(spec, out, steps_per_epoch=1, echo=False),
        max_steps=size.warmup_steps + size.steps, eval_strategy="no", save_strategy="no", eval_on_start=False,
        load_best_model_at_end=False, logging_steps=10_000, disable_tqdm=True,
        train_sampling_strategy="sequential")  # the same batches as the plain loop below
    clock = _StepClock()
    trainer = CaptionTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                             callbacks=[clock], generation_kwargs={})
    batches = [batch for batch, _ in zip(trainer.get_train_dataloader(), range(size.warmup_steps + size.steps))]
    trainer.train()
    measured = clock.ends[size.warmup_steps - 1:]
    return batch * size.steps / (measured[-1] - measured[0]), batches


# blipexp's paths: (key, batch size, frozen encoder, cached features). Batch 2 is the notebook's; 8 is the
# spec's default, where the optimizer's fixed cost per step is spread over more samples.
TRAINING_PATHS = (("full", 2, False, False), ("frozen", 2, True, False), ("cached", 2, True, True),
                  ("full_b8", 8, False, False), ("cached_b8", 8, True, True))


def bench_training(size: Size, out: Path) -> dict:
    tokenizer = synthetic_tokenizer(30524 if size.model == "base" else 2000)
    model = build_model(size, tokenizer)
    image_size = model.config.vision_config.image_size
    pad_to = NOTEBOOK_PAD if size.model == "base" else model.config.text_config.max_position_embeddings
    largest = max(batch for _, batch, _, _ in TRAINING_PATHS)
    pixels, captions = synthetic_data(largest, tokenizer, image_size)
    result: dict = {"model": "BLIP-base (random init)" if size.model == "base" else "tiny BLIP",
                    "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6, "batch": size.batch,
                    "caption_tokens": list(CAPTION_TOKENS), "notebook_pad_to": pad_to,
                    "warmup_steps": size.warmup_steps, "measured_steps": size.steps}
    # what precision=auto picks for this model (a fresh probe: out is new each run)
    chosen = precision.choose("auto", model, out)
    used = chosen.precision
    result.update(precision=used, precision_reason=chosen.reason, probe_gflops=chosen.gflops)
    log(f"training: precision {chosen.reason}")

    # the notebook: torch's default AdamW, lr 5e-5, every caption padded to the tokenizer's max length
    nb = notebook_batch(tokenizer, pixels[: size.batch], captions[: size.batch], pad_to)
    result["notebook_flops_per_sample"] = flops_per_sample(model, nb)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    seconds = timed_steps(loop_step(model, itertools.repeat(nb), optimizer), size.warmup_steps, size.steps)
    result["notebook"] = size.batch * size.steps / seconds
    log(f"training: notebook loop {result['notebook']:.3f} samples/s (padded to {pad_to} tokens), "
        f"{result['notebook'] * result['notebook_flops_per_sample'] / 1e9:.0f} GFLOP/s")
    del model, optimizer

    collator = CaptionCollator(tokenizer, tokenizer.bos_token_id, max_tokens=40)
    for key, batch, frozen, cached in TRAINING_PATHS:
        model = build_model(size, tokenizer)
        rows = pixels[:batch]
        if frozen:
            model.vision_model.requires_grad_(False)
        if cached:
            rows = encode_vision(model.vision_model, rows)
            model.vision_model = PassThroughVision()
        items = [(i % batch, captions[i % batch]) for i in range(batch * (size.warmup_steps + size.steps))]
        dataset = CaptionDataset(rows, items, training=True)
        result[key], batches = trainer_samples_per_second(model, dataset, collator, size, batch, out / key, used)
        result[f"{key}_flops_per_sample"] = flops_per_sample(model, batches[0])
        log(f"training: blipexp {key} (batch {batch}, {used}) {result[key]:.3f} samples/s, "
            f"{result[f'{key}_flops_per_sample'] / 1e9:.1f} GFLOP/sample, "
            f"{result[key] * result[f'{key}_flops_per_sample'] / 1e9:.0f} GFLOP/s")
        if key == "full":  # the same padded batches in a plain loop with the same optimizer: the Trainer's cost
            del model
            model = build_model(size, tokenizer)
            optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
            seconds = timed_steps(loop_step(model, itertools.cycle(batches), optimizer, bf16=used == "bf16"),
                                  size.warmup_steps, size.steps)
            result["plain"] = batch * size.steps / seconds
            log(f"training: plain loop, blipexp's padded batches {result['plain']:.3f} samples/s")
        del model
    return result
