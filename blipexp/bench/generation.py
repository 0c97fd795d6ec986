"""Generation throughput: captions/s batched vs one image at a time, from pixels and from cached features."""
from __future__ import annotations

import time

import torch

from ..model.feature_cache import PassThroughVision, encode_vision
from .sizes import Size, log
from .synthetic import build_model, synthetic_tokenizer


def bench_generation(size: Size) -> dict:
    """From pixels (the encoder runs) and from cached features (a frozen-encoder sweep's evaluation)."""
    tokenizer = synthetic_tokenizer(30524 if size.model == "base" else 2000)
    model = build_model(size, tokenizer).eval()
    image_size = model.config.vision_config.image_size
    pixels = torch.randn(size.captions, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    result = {"captions": size.captions, "new_tokens": size.new_tokens}
    result["batched"], result["single"] = captions_per_second(model, pixels, size)
    model.vision_model, vision = PassThroughVision(), model.vision_model
    features = encode_vision(vision, pixels)
    result["cached_batched"], result["cached_single"] = captions_per_second(model, features, size)
    for prefix, label in (("", "from pixels"), ("cached_", "from cached features")):
        log(f"generation {label}: batched {result[prefix + 'batched']:.2f} captions/s, one at a time "
            f"{result[prefix + 'single']:.2f} ({size.captions} images, {size.new_tokens} tokens each)")
    return result


def captions_per_second(model, inputs: torch.Tensor, size: Size) -> tuple[float, float]:
    # min = max new tokens: random weights may stop early; equal work makes the comparison fair
    kwargs = dict(max_new_tokens=size.new_tokens, min_new_tokens=size.new_tokens, num_beams=1)
    with torch.no_grad():
        model.generate(pixel_values=inputs[:1], **kwargs)  # warm-up
        started = time.perf_counter()
        model.generate(pixel_values=inputs, **kwargs)
        batched = len(inputs) / (time.perf_counter() - started)
        started = time.perf_counter()
        for i in range(len(inputs)):
            model.generate(pixel_values=inputs[i: i + 1], **kwargs)
        single = len(inputs) / (time.perf_counter() - started)
    return batched, single
