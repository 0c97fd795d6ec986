"""Generation settings from the spec, and generate() with a prompt on the tiny BLIP (untrained: the mechanics)."""
import pytest
import torch
from transformers import BlipForConditionalGeneration

from blipexp.experiment.spec import ExperimentSpec
from blipexp.model import generation
from blipexp.model.tiny import build_tiny_model, build_tiny_processor

CAPTIONS = ["a photograph of a red player", "two blue players chase the ball"]


@pytest.fixture(scope="module")
def tiny():
    processor = build_tiny_processor(CAPTIONS)
    model = build_tiny_model(processor, seed=0).eval()
    pixels = torch.rand(2, 3, 64, 64)
    return model, processor.tokenizer, pixels


def test_settings_are_the_spec_generation_fields():
    spec = ExperimentSpec().replace(num_beams=3, min_new_tokens=2, length_penalty=0.5, repetition_penalty=1.3,
                                    no_repeat_ngram_size=2, prompt="a photograph of")
    assert generation.settings(spec) == {"max_new_tokens": 30, "num_beams": 3, "min_new_tokens": 2,
                                         "length_penalty": 0.5, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2,
                                         "prompt": "a photograph of"}
    assert generation.DEFAULTS == generation.settings(ExperimentSpec())


def test_a_prompt_starts_the_decoder_and_is_cut_from_the_output(tiny, monkeypatch):
    model, tokenizer, pixels = tiny
    seen = []
    original = BlipForConditionalGeneration.generate

    def recording(self, *args, **kwargs):
        seen.append(kwargs["input_ids"].clone())  # generate() overwrites its first id in place
        out = original(self, *args, **kwargs)
        seen.append(out)
        return out

    monkeypatch.setattr(BlipForConditionalGeneration, "generate", recording)
    ids = generation.generate(model, tokenizer, pixels, {"prompt": "a photograph of", "max_new_tokens": 5,
                                                         "min_new_tokens": 5})
    prompt_ids, full = seen
    # BLIP's generate drops the last id it is given: the [SEP] of "[CLS] a photograph of [SEP]"
    assert tokenizer.convert_ids_to_tokens(prompt_ids[0]) == ["[CLS]", "a", "photograph", "of", "[SEP]"]
    assert tokenizer.convert_ids_to_tokens(full[0, :4]) == ["[DEC]", "a", "photograph", "of"], "conditioned on it"
    assert torch.equal(ids, full[:, 4:]) and ids.shape == (2, 5), "the caption is what follows the prompt"


def test_min_new_tokens_forces_longer_captions(tiny):
    model, tokenizer, pixels = tiny
    short = generation.generate(model, tokenizer, pixels, {"max_new_tokens": 12})
    forced = generation.generate(model, tokenizer, pixels, {"max_new_tokens": 12, "min_new_tokens": 12})
    sep = tokenizer.sep_token_id
    assert forced.shape[1] == 13 and (forced[:, 1:-1] != sep).all(), "no end token before the minimum"
    assert torch.equal(short[:, 0], forced[:, 0])  # both start from [DEC]


def test_captions_are_text_without_the_prompt(tiny):
    model, tokenizer, pixels = tiny
    settings = {"prompt": "a photograph of", "max_new_tokens": 4, "min_new_tokens": 4}
    texts = generation.captions(model, tokenizer, pixels, settings)
    ids = generation.generate(model, tokenizer, pixels, settings)
    assert texts == [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]

