"""Full fine-tuning, a frozen encoder (cached features) and LoRA, trained alike on the tiny `football_baseline`:
trainable parameters, training seconds per epoch (evaluation excluded) and the best validation CIDEr of each.

LoRA adapts the text decoder's attention with the encoder frozen and its features cached (as football_lora does),
at a higher learning rate: its updates start at zero. The trainable and total counts are the ones the run logs.
"""
from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from .sizes import Size, log

LORA_LEARNING_RATE = 1e-2  # the tiny profile's 2e-3 suits full fine-tuning; adapters starting at zero want more
WAYS = {
    "full fine-tuning": {},
    "frozen encoder, cached features": {"freeze_vision_encoder": True, "cache_vision_features": True},
    "LoRA r=8 on decoder attention, cached features": {
        "adapter": "lora", "lora_r": 8, "freeze_vision_encoder": True, "cache_vision_features": True,
        "learning_rate": LORA_LEARNING_RATE},
}


class EpochClock(TrainerCallback):
    """Seconds of each epoch's training, from its first step to its last (the evaluation after it excluded)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._started)


def bench_adapters(size: Size, home: Path) -> dict:
    from .. import tracking
    from ..data import load_data
    from ..experiment import catalog
    from ..training.train import train_trial, untrained_key

    base = catalog.load("football_baseline", catalog.experiments_dir()).tiny().replace(
        pitch_scenes=size.sweep_scenes, sample_captions=0).with_overrides(size.overrides)
    if size.name == "quick":
        base = base.replace(epochs=1)
    tracking.configure(home)
    tracking.use_experiment("bench-adapters", home)
    data = load_data(base, home)
    result: dict = {"epochs": base.epochs, "scenes": base.pitch_scenes, "ways": {}}
    untrained = None  # the ways differ in training-only fields (train.TRAINING_ONLY): one epoch-0 evaluation
    for way, changes in WAYS.items():
        spec = base.replace(**changes)
        assert untrained_key(spec, data.fingerprint, "fp32") == untrained_key(base, data.fingerprint, "fp32")
        clock = EpochClock()
        started = time.perf_counter()
        trial = train_trial(spec, data, home, echo=False, callbacks=[clock], untrained=untrained)
        untrained = trial.untrained
        params = tracking.Run(trial.run_id).read().data.params
        row = {"trainable": int(params["trainable_parameters"]), "total": int(params["total_parameters"]),
               "seconds_per_epoch": sum(clock.seconds) / len(clock.seconds), "best_cider": trial.val_metrics["cider"],
               "best_epoch": trial.best_epoch, "learning_rate": spec.learning_rate,
               "trial_seconds": time.perf_counter() - started}
        result["ways"][way] = row
        log(f"adapters: {way}: {row['trainable']:,} of {row['total']:,} parameters trainable, "
            f"{row['seconds_per_epoch']:.1f} s/epoch, best val CIDEr {row['best_cider']:.3f} "
            f"(epoch {row['best_epoch']})")
    return result


def markdown(report: dict) -> list[str]:
    lines = [f"Tiny `football_baseline` ({report['scenes']} scenes, {report['epochs']} epochs), trained three ways; "
             "s/epoch is training only (each epoch's evaluation excluded):", "",
             "| way | trainable parameters | s/epoch | best val CIDEr (epoch) | learning rate | trial wall time |",
             "|---|---|---|---|---|---|"]
    for way, r in report["ways"].items():
        lines.append(f"| {way} | {r['trainable']:,} of {r['total']:,} ({r['trainable'] / r['total']:.1%}) | "
                     f"{r['seconds_per_epoch']:.1f} | {r['best_cider']:.3f} ({r['best_epoch']}) | "
                     f"{r['learning_rate']:g} | {r['trial_seconds']:.0f} s |")
    return lines
