import torch

from blipexp.data.collator import IGNORE_INDEX, CaptionCollator, prompt_length
from blipexp.model.tiny import build_tiny_processor

CAPTIONS = ["a red player dribbles the ball", "two blue players chase the ball near the left goal at night"]


def make_collator(max_tokens=40):
    processor = build_tiny_processor(CAPTIONS)
    return CaptionCollator(processor.tokenizer, processor.tokenizer.convert_tokens_to_ids("[DEC]"), max_tokens), processor


def features(captions):
    return [{"pixel_values": torch.full((3, 64, 64), float(i)), "caption": c} for i, c in enumerate(captions)]


def test_pads_to_the_longest_caption_and_masks_padding_in_labels():
    collator, processor = make_collator()
    batch = collator(features(CAPTIONS))
    lengths = [len(processor.tokenizer(c)["input_ids"]) for c in CAPTIONS]
    assert batch["input_ids"].shape == (2, max(lengths))  # dynamic, not max_length padding
    short = batch["labels"][0]
    assert (short[lengths[0]:] == IGNORE_INDEX).all()
    assert (short[: lengths[0]] != IGNORE_INDEX).all()
    assert (batch["labels"][1] != IGNORE_INDEX).all()
    # every pad position is masked, every real token is a target
    pad = batch["attention_mask"] == 0
    assert torch.equal(batch["labels"] == IGNORE_INDEX, pad)


def test_first_token_is_blips_decoder_start_and_captions_end_with_sep():
    collator, processor = make_collator()
    batch = collator(features(CAPTIONS))
    dec = processor.tokenizer.convert_tokens_to_ids("[DEC]")
    assert (batch["input_ids"][:, 0] == dec).all()
    last_real = batch["attention_mask"].sum(1) - 1
    sep = processor.tokenizer.sep_token_id
    assert all(batch["input_ids"][i, last_real[i]] == sep for i in range(2))


def test_truncates_to_max_tokens_and_stacks_pixels():
    collator, _ = make_collator(max_tokens=5)
    batch = collator(features(CAPTIONS))
    assert batch["input_ids"].shape[1] == 5
    assert batch["pixel_values"].shape == (2, 3, 64, 64)
    assert batch["pixel_values"][1].eq(1.0).all()


def test_a_prompt_leads_every_caption_and_is_masked_out_of_the_loss():
    processor = build_tiny_processor([*CAPTIONS, "a photograph of"])
    dec = processor.tokenizer.convert_tokens_to_ids("[DEC]")
    collator = CaptionCollator(processor.tokenizer, dec, max_tokens=5, prompt="a photograph of")
    batch = collator(features(CAPTIONS))
    tokens = [processor.tokenizer.convert_ids_to_tokens(row) for row in batch["input_ids"]]
    assert all(row[:4] == ["[DEC]", "a", "photograph", "of"] for row in tokens)
    assert (batch["labels"][:, :4] == IGNORE_INDEX).all(), "the prompt is given, never a target"
    assert (batch["labels"][:, 4:] != IGNORE_INDEX).all(), "the caption's tokens are targets"
    assert batch["input_ids"].shape[1] == 5 + 3, "max_tokens bounds the caption, not prompt + caption"


def test_prompt_length_counts_the_decoder_start_and_the_prompt():
    tokenizer = build_tiny_processor(["a photograph of a red player", "two blue players chase the ball"]).tokenizer
    assert prompt_length(tokenizer, "a photograph of") == 4
    assert prompt_length(tokenizer, "") == 0
