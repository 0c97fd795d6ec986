"""CaptionCollator: batches of (pixel values, caption) for BLIP's text decoder.

Captions are padded to the longest in the batch (not to a fixed length), the first token is replaced by
BLIP's decoder start token ([DEC]: `generate()` starts from it, so training must too), and padded positions
in `labels` are set to -100 so the loss ignores them (BLIP does not mask padding itself).

With a `prompt` (conditional captioning, e.g. "a photograph of") each caption is trained on as "prompt caption",
with the prompt's positions masked in `labels`: the model learns to continue the prompt, not to say it, and
generation starts from it (model/generation.py's `generate`; `prompt_length` counts its positions). `max_tokens`
still bounds the caption itself.

Items whose image turned out unusable in evaluation (`usable` False, see `features.CaptionDataset`) keep their
place with every label masked, which also tells `compute_metrics` to leave that image out. `bad_image` and
`bad_reason` travel with the batch for the trainer to count; the model never sees them (SKIP_KEYS).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100  # positions CrossEntropyLoss skips
SKIP_KEYS = ("bad_image", "bad_reason")  # batch entries for the trainer's count of unusable images


def prompt_length(tokenizer, prompt: str) -> int:
    """Positions the prompt takes at the start of a training caption: [CLS] (made [DEC]) and its tokens."""
    prompt = prompt.strip()
    return len(tokenizer(prompt)["input_ids"]) - 1 if prompt else 0


@dataclass
class CaptionCollator:
    tokenizer: Any
    bos_token_id: int
    max_tokens: int
    prompt: str = ""

    def __post_init__(self) -> None:
        self._prompt_positions = prompt_length(self.tokenizer, self.prompt)  # [DEC] and the prompt's tokens

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prefix = f"{self.prompt.strip()} " if self._prompt_positions else ""
        text = self.tokenizer(
            [prefix + f["caption"] for f in features],
            padding="longest",
            truncation=True,
            max_length=self.max_tokens + max(0, self._prompt_positions - 1),
            return_tensors="pt",
        )
        input_ids = text["input_ids"].clone()
        input_ids[:, 0] = self.bos_token_id
        labels = input_ids.masked_fill(text["attention_mask"] == 0, IGNORE_INDEX)
        labels[:, :self._prompt_positions] = IGNORE_INDEX  # the model is given the prompt, never asked for it
        usable = torch.tensor([f.get("usable", True) for f in features])
        labels[~usable] = IGNORE_INDEX
        return {
            "pixel_values": torch.stack([f["pixel_values"] for f in features]).float(),
            "input_ids": input_ids,
            "attention_mask": text["attention_mask"],
            "labels": labels,
            **{key: torch.tensor([f.get(key, -1) for f in features]) for key in SKIP_KEYS},
        }
