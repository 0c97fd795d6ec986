"""Frozen-encoder feature cache: the vision encoder's outputs computed once, shared by epochs, trials and runs.

With `freeze_vision_encoder` (and no image augmentation: blipexp has none) every trial of a sweep feeds the
same images through the same fixed encoder. Computing those outputs once turns a trial into text-decoder
training only (DESIGN.md: ~400 -> ~70 GFLOP per BLIP-base sample).

A cache file is keyed by everything that changes the outputs: the images (data fingerprint and the split's
image keys), the image-processor settings, the model's name and revision, and a digest of the vision
encoder's weights (which also covers a random-init model's seed). Change any of them and a new file is made.
Files live under `<home>/cache/vision/`, are written atomically (a killed run never leaves half a file), and
are safe to share between parallel workers (the same key always holds the same tensor).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .data.features import encode_images
from .data.sources import Example

ENCODE_BATCH = 32  # images per vision-encoder forward pass when filling the cache


@dataclass
class CacheReport:
    """What one split's lookup did, for the console and the MLflow run."""

    split: str
    hit: bool
    megabytes: float
    seconds: float
    path: Path


class PassThroughVision(torch.nn.Module):
    """Stands in for BLIP's vision model while training on cached features: its input already is the output.

    BLIP's forward() and generate() read `vision_model(pixel_values)[0]`; with this module in place, the
    "pixel_values" a batch carries are the cached encoder outputs and pass straight to the text decoder.
    """

    def forward(self, pixel_values: torch.Tensor, **_: object) -> BaseModelOutputWithPooling:
        return BaseModelOutputWithPooling(last_hidden_state=pixel_values, pooler_output=pixel_values[:, 0])


def vision_digest(vision_model) -> str:
    """A digest of the vision encoder's weights: the same weights give the same digest, on any machine."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(vision_model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(*, fingerprint: str, keys: Sequence[str], image_processor, model_name: str, revision: str,
              weights: str) -> str:
    parts = {
        "data": fingerprint,
        "images": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
        "processor": image_processor.to_dict(),
        "model": model_name,
        "revision": revision,
        "vision_weights": weights,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


@torch.no_grad()
def encode_vision(vision_model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The vision encoder's last hidden state for every image, in eval mode (no dropout)."""
    was_training = vision_model.training
    vision_model.eval()
    device = next(vision_model.parameters()).device
    try:
        chunks = [vision_model(pixel_values=pixel_values[i: i + ENCODE_BATCH].to(device)).last_hidden_state.cpu()
                  for i in range(0, len(pixel_values), ENCODE_BATCH)]
    finally:
        vision_model.train(was_training)
    return torch.cat(chunks)


class FeatureCache:
    """One model's cache: `features(split, examples)` returns encoder outputs, computing them only on a miss."""

    def __init__(self, root: Path, model, image_processor, *, fingerprint: str, model_name: str, revision: str):
        self.root = root
        self.vision = model.vision_model  # held here: training swaps it out of the model (PassThroughVision)
        self.image_processor = image_processor
        self.fingerprint = fingerprint
        self.model_name = model_name
        self.revision = revision
        self.weights = vision_digest(self.vision)
        self.reports: list[CacheReport] = []

    def features(self, split: str, examples: Sequence[Example]) -> torch.Tensor:
        started = time.perf_counter()
        key = cache_key(fingerprint=self.fingerprint, keys=[e.key for e in examples],
                        image_processor=self.image_processor, model_name=self.model_name, revision=self.revision,
                        weights=self.weights)
        path = self.root / f"{key}.safetensors"
        tensor = _load(path)
        hit = tensor is not None and len(tensor) == len(examples)
        if not hit:
            pixels = encode_images(self.image_processor, [e.image for e in examples])
            tensor = encode_vision(self.vision, pixels)
            _save_atomically(path, tensor, {"split": split, "images": str(len(examples)), "model": self.model_name})
        self.reports.append(CacheReport(split, hit, path.stat().st_size / 2**20, time.perf_counter() - started, path))
        return tensor


def _load(path: Path) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        return load_file(str(path))["features"]
    except Exception:  # unreadable (e.g. a disk error): recompute and overwrite
        return None


def _save_atomically(path: Path, tensor: torch.Tensor, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    save_file({"features": tensor.contiguous()}, str(partial), metadata=metadata)
    os.replace(partial, path)  # atomic: readers see the whole file or none
