"""Stand-ins that need no download: BLIP-base's (or the tiny preset's) architecture with random weights, a
tokenizer with BERT's layout, and fixed noise images with captions of realistic token counts."""
from __future__ import annotations

import random

import torch
from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration

from ..model.tiny import SPECIAL_TOKENS, tiny_config
from .sizes import Size

NOTEBOOK_PAD = 512  # BLIP-base's tokenizer: model_max_length 512, which padding="max_length" pads to
CAPTION_TOKENS = (18, 24)  # a short and a long news-photo caption, [CLS] and [SEP] included


def synthetic_tokenizer(vocab_size: int) -> BertTokenizer:
    """BERT's layout ([PAD] 0, [CLS] 101, [SEP] 102, [DEC] last-but-one) with placeholder words "w<i>"."""
    specials = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, "[DEC]": vocab_size - 2}
    assert set(specials) == set(SPECIAL_TOKENS)
    by_id = {i: t for t, i in specials.items()}
    vocab = {by_id.get(i, f"w{i}"): i for i in range(vocab_size)}
    return BertTokenizer(vocab=vocab, do_lower_case=True, bos_token="[DEC]", model_max_length=NOTEBOOK_PAD)


def build_model(size: Size, tokenizer: BertTokenizer, seed: int = 0) -> BlipForConditionalGeneration:
    text = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.sep_token_id, sep_token_id=tokenizer.sep_token_id)
    if size.model == "base":
        config = BlipConfig(text_config=text)  # BlipConfig's defaults are BLIP-base
    else:
        config = tiny_config(len(tokenizer), tokenizer.bos_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return BlipForConditionalGeneration(config)


def synthetic_data(count: int, tokenizer: BertTokenizer, image_size: int) -> tuple[torch.Tensor, list[str]]:
    """Fixed images (normalised-pixel noise) and captions whose token counts alternate over CAPTION_TOKENS."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(count, 3, image_size, image_size, generator=generator)
    rng = random.Random(0)
    words = [w for w in tokenizer.vocab if w.startswith("w")]
    captions = [" ".join(rng.sample(words, CAPTION_TOKENS[i % 2] - 2)) for i in range(count)]
    return pixels, captions
