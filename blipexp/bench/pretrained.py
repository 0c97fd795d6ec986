"""The pretrained tiny models the tiny sections start from, built once before anything is timed, and where each
one's compute goes: the `--tiny` preset, and the same recipe with BLIP-base's share of FLOPs in the vision encoder.

Freezing and caching the encoder saves its share of each step, so a sweep's speed-up from the cache follows that
share: 66% of a forward pass in the preset, 84% in BLIP-base. The sweep comparison runs on both (sweeps.py)."""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..model.pretrain import CACHE_VARIABLE, RECIPE, Recipe, cache_root, pretrained_tiny
from .sizes import Size

# the preset's recipe with a larger image (145 tokens instead of 65) and twice the encoder's depth: 86% of a
# forward pass in the vision encoder, as in BLIP-base; the text decoder is the preset's
BASE_SHAPED = dataclasses.replace(RECIPE, image_size=96, vision_layers=4)
CAPTION_TOKENS = 16  # a pitch caption's length in tokens, about: where a forward pass's FLOPs go depends on it


def shaped_recipe(size: Size) -> Recipe:
    """BASE_SHAPED; the --quick smoke check pretrains it for a few steps only (its figures mean nothing)."""
    return BASE_SHAPED if size.name == "full" else dataclasses.replace(BASE_SHAPED, images=8, steps=2, batch_size=4)


def bench_pretrained(shared: Path, recipe: Recipe = RECIPE) -> dict:
    """Build (or find) a pretrained tiny model in one cache that all the benchmark's homes use, so that no timed
    trial or sweep pays for the build; report how long the build took and the encoder's share of FLOPs."""
    os.environ.setdefault(CACHE_VARIABLE, str(shared))  # a cache the caller already shares (the tests') is kept
    cached = (cache_root(shared) / recipe.digest() / "recipe.json").is_file()
    started = time.perf_counter()
    folder = pretrained_tiny(shared, recipe, echo=False)
    seconds = time.perf_counter() - started
    model, processor = recipe.architecture()
    return {"seconds": seconds, "built": not cached, "folder": str(folder), "steps": recipe.steps,
            "images": recipe.images, "image_size": recipe.image_size, "vision_layers": recipe.vision_layers,
            "vision_share": vision_share(model, processor.image_processor.size["height"])}


def vision_share(model, image_size: int) -> float:
    """The vision encoder's share of the FLOPs of one forward pass (encoder, then the text decoder reading its
    output and a CAPTION_TOKENS-token caption), counted by shapes: a model on the meta device works too."""
    device = next(model.parameters()).device
    pixels = torch.zeros(2, 3, image_size, image_size, device=device)
    ids = torch.ones(2, CAPTION_TOKENS, dtype=torch.long, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as vision:
        features = model.vision_model(pixel_values=pixels)[0]
    with torch.no_grad(), FlopCounterMode(display=False) as text:
        model.text_decoder(input_ids=ids, encoder_hidden_states=features, labels=ids)
    return vision.get_total_flops() / (vision.get_total_flops() + text.get_total_flops())


def blip_base_vision_share() -> float:
    """The same share for BLIP-base's architecture (BlipConfig's defaults), built on the meta device: no weights."""
    from transformers import BlipConfig, BlipForConditionalGeneration

    config = BlipConfig()
    with torch.device("meta"):
        model = BlipForConditionalGeneration(config)
    return vision_share(model, config.vision_config.image_size)
