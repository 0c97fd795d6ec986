"""Model-ready datasets, built on demand: an item's image is decoded when a DataLoader (worker) asks for it.

Rows come from `PixelRows` (decode + image processor, per image) or from the frozen encoder's feature cache
(`blipexp.model.feature_cache.FeatureRows`, a memory-mapped file). Either raises `BadImage` for an image that
cannot be used (unreadable, truncated, gone since the first look); the datasets turn that into a skip, never a
crash: in training the item is replaced by the next usable one, in evaluation the image is scored as absent
(its labels are masked out, see `CaptionCollator`). Either way the item names the failed image and the reason,
so the run can count them (`SkipTally`).
"""
from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Protocol

import torch

from ..experiment.spec import ExperimentSpec
from ..runtime.environment import available_cores
from .images import REASONS, BadImage
from .sources import CaptionData, Example

MAX_SUBSTITUTES = 16  # a training item whose image fails is replaced by one of the next this many
MEMO_BYTES = 128 * 2**20  # a split whose pixels fit in this is decoded once and kept (small data: no workers)
NO_IMAGE = -1


class Rows(Protocol):
    """One input row (pixel values or encoder features) per example index; BadImage when unusable."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> torch.Tensor: ...

    def blank(self) -> torch.Tensor: ...  # a stand-in row of the right shape for an unusable image


class PixelRows:
    """Pixel values of `examples`, decoded and processed per request. With `memo`, each row is kept after its
    first use (only for splits whose pixels fit in MEMO_BYTES: see `fits_in_memory`)."""

    def __init__(self, data: CaptionData, examples: Sequence[Example], image_processor, memo: bool = False):
        self.data = data
        self.examples = examples
        self.image_processor = image_processor
        self.memo: dict[int, torch.Tensor] | None = {} if memo else None

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.memo is not None and index in self.memo:
            return self.memo[index]
        image = self.data.image(self.examples[index])
        row = self.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]
        if self.memo is not None:
            self.memo[index] = row
        return row

    def blank(self) -> torch.Tensor:
        return torch.zeros(pixel_shape(self.image_processor))


def pixel_shape(image_processor) -> tuple[int, int, int]:
    size = image_processor.size
    return 3, size["height"], size["width"]


def fits_in_memory(n_images: int, image_processor) -> bool:
    """Whether a split's pixel values are small enough to keep (fp32) instead of decoding them every epoch."""
    channels, height, width = pixel_shape(image_processor)
    return n_images * channels * height * width * 4 <= MEMO_BYTES


def dataloader_workers(spec: ExperimentSpec, data: CaptionData, processor, cached: bool) -> int:
    """The spec's number, or for "auto" (-1): none when decoding is not the work (cached features, or pixels
    small enough to keep after the first epoch), else one process per core but one, up to 4."""
    if spec.dataloader_workers >= 0:
        return spec.dataloader_workers
    if cached or fits_in_memory(len(data.train), processor.image_processor):
        return 0
    return max(1, min(4, available_cores() - 1))


class CaptionDataset(torch.utils.data.Dataset):
    """Items are {"pixel_values", "caption", "usable", "bad_image", "bad_reason"}; several items may share one
    image. `training`: a failed image's item is replaced by the next usable one; otherwise it stays, blank and
    not usable (evaluation keeps one item per image, in order)."""

    def __init__(self, rows: Rows, pairs: list[tuple[int, str]], training: bool):
        assert all(0 <= i < len(rows) for i, _ in pairs), "pair points past the rows"
        self.rows = rows
        self.pairs = pairs
        self.training = training

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        image, caption = self.pairs[index]
        try:
            return _item(self.rows[image], caption)
        except BadImage as exc:
            failed = {"bad_image": image, "bad_reason": REASONS.index(exc.reason)}
        if not self.training:
            return {**_item(self.rows.blank(), caption), "usable": False, **failed}
        for step in range(1, min(MAX_SUBSTITUTES, len(self.pairs) - 1) + 1):
            other, other_caption = self.pairs[(index + step) % len(self.pairs)]
            try:
                return {**_item(self.rows[other], other_caption), **failed}
            except BadImage:
                continue
        raise RuntimeError(f"{MAX_SUBSTITUTES + 1} images in a row cannot be read (from image {image}): the dataset "
                           "changed since it was checked. Re-run: its first look then checks it again")


def _item(row: torch.Tensor, caption: str) -> dict:
    return {"pixel_values": row, "caption": caption, "usable": True, "bad_image": NO_IMAGE, "bad_reason": NO_IMAGE}


def training_dataset(rows: Rows, examples: Sequence[Example]) -> CaptionDataset:
    """One item per (image, reference caption): every reference is a training target."""
    assert len(rows) == len(examples), "one row per example"
    return CaptionDataset(rows, [(i, c) for i, e in enumerate(examples) for c in e.captions], training=True)


def evaluation_dataset(rows: Rows, examples: Sequence[Example]) -> tuple[CaptionDataset, list[list[str]]]:
    """One item per image (the loss uses its first reference); all references are returned for the metrics."""
    assert len(rows) == len(examples), "one row per example"
    dataset = CaptionDataset(rows, [(i, e.captions[0]) for i, e in enumerate(examples)], training=False)
    return dataset, [list(e.captions) for e in examples]


class SkipTally:
    """Images found unusable while training or evaluating, each counted once per dataset, by reason."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, int], str] = {}

    def add(self, dataset: str, bad_image: torch.Tensor, bad_reason: torch.Tensor) -> None:
        for image, reason in zip(bad_image.tolist(), bad_reason.tolist()):
            if image != NO_IMAGE:
                self.found.setdefault((dataset, image), REASONS[reason])

    def counts(self) -> collections.Counter:
        return collections.Counter(self.found.values())
