"""Generation settings: one dict built from a spec, and one function that captions pixels with it.

The trainer's evaluation, the sample-captions table and the served pyfunc all call `generate`, and the pyfunc's
generation.json is `settings(spec)`: decoding cannot differ between the scores a model was selected on and what
it serves.

A `prompt` conditions the caption (BLIP's conditional captioning, e.g. "a photograph of"): the decoder starts
from `[DEC] prompt` instead of `[DEC]`. The prompt's tokens are cut from the output, so a caption is the text the
model added: it is scored against the references without the prompt, and served without it. (A caller wanting
the sentence whole prepends the prompt it set.)
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ..experiment.spec import ExperimentSpec

if TYPE_CHECKING:
    import torch

# Spec fields that are generation settings: generation.json, the pyfunc's params and the version's tags.
FIELDS = ("max_new_tokens", "num_beams", "min_new_tokens", "length_penalty", "repetition_penalty",
          "no_repeat_ngram_size", "prompt")
DEFAULTS = {f.name: f.default for f in dataclasses.fields(ExperimentSpec) if f.name in FIELDS}


def settings(spec: ExperimentSpec) -> dict[str, Any]:
    """The spec's generation settings, by field name."""
    return {key: getattr(spec, key) for key in FIELDS}


def generate(model, tokenizer, pixel_values: torch.Tensor, settings: dict[str, Any]) -> torch.Tensor:
    """Caption token ids for a batch of pixels (or cached vision features), the prompt's tokens cut off.
    Settings not given take the spec's defaults."""
    settings = {**DEFAULTS, **settings}
    kwargs = {
        "max_new_tokens": int(settings["max_new_tokens"]),
        "num_beams": int(settings["num_beams"]),
        "min_new_tokens": int(settings["min_new_tokens"]),
        "length_penalty": float(settings["length_penalty"]),
        "repetition_penalty": float(settings["repetition_penalty"]),
        "no_repeat_ngram_size": int(settings["no_repeat_ngram_size"]),
    }
    prompt = str(settings["prompt"]).strip()
    if not prompt:
        return model.generate(pixel_values=pixel_values, **kwargs)
    # BLIP's generate sets the first id to [DEC] and drops the LAST one (the [SEP] a tokenizer appends): it wants
    # the prompt tokenized whole, "[CLS] prompt [SEP]", and starts the decoder from "[DEC] prompt".
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(pixel_values.device)
    ids = ids.repeat(pixel_values.shape[0], 1)
    output = model.generate(pixel_values=pixel_values, input_ids=ids, **kwargs)
    kept = ids.shape[1] - 1  # the decoder's start: [DEC] and the prompt's tokens
    return output[:, kept:]


def captions(model, tokenizer, pixel_values: torch.Tensor, settings: dict[str, Any]) -> list[str]:
    """Captions as text, without the prompt."""
    import torch  # imported when used: the served model's module (serving) loads without it

    with torch.no_grad():
        ids = generate(model, tokenizer, pixel_values, settings)
    return [text.strip() for text in tokenizer.batch_decode(ids.cpu(), skip_special_tokens=True)]

