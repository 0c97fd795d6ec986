"""Model-ready datasets: images turned into model inputs once (not every epoch), paired with captions.

The inputs are pixel values, or the frozen vision encoder's cached outputs (see blipexp.feature_cache): the
datasets take an already encoded tensor, one row per example.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from .sources import Example

ENCODE_CHUNK = 64  # images per image-processor call: bounds peak memory on large sets


def encode_images(image_processor, images: Sequence[Image.Image]) -> torch.Tensor:
    chunks = [
        image_processor(images=list(images[i : i + ENCODE_CHUNK]), return_tensors="pt")["pixel_values"]
        for i in range(0, len(images), ENCODE_CHUNK)
    ]
    return torch.cat(chunks)


class CaptionDataset(torch.utils.data.Dataset):
    """Items are {"pixel_values", "caption"}; several items may share one image's row."""

    def __init__(self, pixel_values: torch.Tensor, pairs: list[tuple[int, str]]):
        assert all(0 <= i < len(pixel_values) for i, _ in pairs), "pair points past the encoded images"
        self.pixel_values = pixel_values
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        image, caption = self.pairs[index]
        return {"pixel_values": self.pixel_values[image], "caption": caption}


def training_dataset(pixels: torch.Tensor, examples: Sequence[Example]) -> CaptionDataset:
    """One item per (image, reference caption): every reference is a training target."""
    assert len(pixels) == len(examples), "one encoded row per example"
    return CaptionDataset(pixels, [(i, c) for i, e in enumerate(examples) for c in e.captions])


def evaluation_dataset(pixels: torch.Tensor, examples: Sequence[Example]) -> tuple[CaptionDataset, list[list[str]]]:
    """One item per image (the loss uses its first reference); all references are returned for the metrics."""
    assert len(pixels) == len(examples), "one encoded row per example"
    dataset = CaptionDataset(pixels, [(i, e.captions[0]) for i, e in enumerate(examples)])
    return dataset, [list(e.captions) for e in examples]
