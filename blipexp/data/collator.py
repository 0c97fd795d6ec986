"""CaptionCollator: batches of (pixel values, caption) for BLIP's text decoder.

Captions are padded to the longest in the batch (not to a fixed length), the first token is replaced by
BLIP's decoder start token ([DEC]: `generate()` starts from it, so training must too), and padded positions
in `labels` are set to -100 so the loss ignores them (BLIP does not mask padding itself).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100  # positions CrossEntropyLoss skips


@dataclass
class CaptionCollator:
    tokenizer: Any
    bos_token_id: int
    max_tokens: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        text = self.tokenizer(
            [f["caption"] for f in features],
            padding="longest",
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        input_ids = text["input_ids"].clone()
        input_ids[:, 0] = self.bos_token_id
        labels = input_ids.masked_fill(text["attention_mask"] == 0, IGNORE_INDEX)
        return {
            "pixel_values": torch.stack([f["pixel_values"] for f in features]),
            "input_ids": input_ids,
            "attention_mask": text["attention_mask"],
            "labels": labels,
        }
