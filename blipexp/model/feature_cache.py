"""Frozen-encoder feature cache: the vision encoder's outputs computed once, shared by epochs, trials and runs.

With `freeze_vision_encoder` (and no image augmentation: blipexp has none) every trial of a sweep feeds the
same images through the same fixed encoder. Computing those outputs once turns a trial into text-decoder
training only (the benchmark counts the FLOPs per sample of both paths: `python -m blipexp.bench`).

A cache file is keyed by everything that changes the outputs: the images (data fingerprint and the split's
image keys), the image-processor settings, the model's name and revision, and a digest of the vision
encoder's weights (which also covers a random-init model's seed). Change any of them and a new file is made.
Files live under `<home>/cache/vision/`, are written atomically (a killed run never leaves half a file), and
are safe to share between parallel workers (the same key always holds the same tensor).

Size and memory: features are stored in half precision as a NumPy `.npy` file (one row per image) and read
memory-mapped, one row per item, so neither filling nor reading the cache holds a split in memory. Filling it
streams the images through the encoder in batches. Images that turn out unusable while filling get a zero row
and are listed in the `.bad.json` beside it; reading such a row raises BadImage, as decoding the image would.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..data.features import CaptionDataset, PixelRows
from ..data.images import BadImage
from ..data.sources import CaptionData, Example
from ..runtime import progress

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


class FeatureRows:
    """The cached features of one split, read memory-mapped one row at a time (as fp32). Picklable for
    DataLoader workers: each process maps the file itself."""

    def __init__(self, path: Path, bad: dict[int, str]):
        self.path = path
        self.bad = bad
        self._array: np.ndarray | None = None

    def _rows(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return len(self._rows())

    def __getitem__(self, index: int) -> torch.Tensor:
        if index in self.bad:
            raise BadImage(self.bad[index], "found unusable when the feature cache was filled")
        return torch.from_numpy(np.asarray(self._rows()[index], dtype=np.float32))

    def blank(self) -> torch.Tensor:
        return torch.zeros(self._rows().shape[1:])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}


class FeatureCache:
    """One model's cache: `rows(split, examples)` gives encoder outputs, computing them only on a miss."""

    def __init__(self, root: Path, model, image_processor, data: CaptionData, *, model_name: str, revision: str,
                 workers: int = 0, progress: bool = True):
        self.root = root
        self.vision = model.vision_model  # held here: training swaps it out of the model (PassThroughVision)
        self.image_processor = image_processor
        self.data = data
        self.model_name = model_name
        self.revision = revision
        self.workers = workers
        self.progress = progress
        self.weights = vision_digest(self.vision)
        self.reports: list[CacheReport] = []

    def rows(self, split: str, examples: Sequence[Example]) -> FeatureRows:
        started = time.perf_counter()
        key = cache_key(fingerprint=self.data.fingerprint, keys=[e.key for e in examples],
                        image_processor=self.image_processor, model_name=self.model_name, revision=self.revision,
                        weights=self.weights)
        path, bad_path = self.root / f"{key}.npy", self.root / f"{key}.bad.json"
        bad = _load_bad(bad_path) if path.is_file() else None
        hit = bad is not None and _rows_in(path) == len(examples)
        if not hit:
            bad = self._fill(path, bad_path, split, examples)
        self.reports.append(CacheReport(split, hit, path.stat().st_size / 2**20, time.perf_counter() - started, path))
        return FeatureRows(path, bad)

    def _fill(self, path: Path, bad_path: Path, split: str, examples: Sequence[Example]) -> dict[int, str]:
        """Stream the split's images through the encoder into a half-precision file, batch by batch."""
        rows = PixelRows(self.data, examples, self.image_processor)
        dataset = CaptionDataset(rows, [(i, "") for i in range(len(examples))], training=False)
        loader = torch.utils.data.DataLoader(dataset, batch_size=ENCODE_BATCH, num_workers=self.workers,
                                             collate_fn=_stack)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.npy")
        bad: dict[int, str] = {}
        array = None
        with progress.bar(f"vision features ({split})", len(examples), "img", show=self.progress, mininterval=1.0,
                          leave=False) as bar:
            for start, (pixels, failures) in zip(range(0, len(examples), ENCODE_BATCH), loader):
                features = encode_vision(self.vision, pixels).to(torch.float16).numpy()
                if array is None:
                    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16,
                                                      shape=(len(examples), *features.shape[1:]))
                array[start:start + len(features)] = features
                bad.update({start + offset: reason for offset, reason in failures})
                bar.update(len(features))
        array.flush()
        del array
        _write_atomically(bad_path, json.dumps({str(k): v for k, v in bad.items()}).encode())
        os.replace(partial, path)  # atomic, and after the bad list: a reader never sees a file without its list
        return bad


def _stack(items: list[dict]) -> tuple[torch.Tensor, list[tuple[int, str]]]:
    from ..data.images import REASONS

    failures = [(i, REASONS[item["bad_reason"]]) for i, item in enumerate(items) if not item["usable"]]
    return torch.stack([item["pixel_values"] for item in items]), failures


def _rows_in(path: Path) -> int | None:
    try:
        return len(np.load(path, mmap_mode="r"))
    except (OSError, ValueError):  # unreadable (e.g. a disk error): recompute and overwrite
        return None


def _load_bad(path: Path) -> dict[int, str] | None:
    try:
        return {int(k): v for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError):
        return None


def _write_atomically(path: Path, content: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(content)
    os.replace(partial, path)
