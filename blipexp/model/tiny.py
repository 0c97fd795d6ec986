"""The tiny BLIP: the real `BlipForConditionalGeneration` architecture built from a small `BlipConfig`, with a BERT
word-piece tokenizer of whole words. modeling.py loads the presets from it ("tiny-random" directly; "tiny" once
pretrain.py has trained it), and pretrain.py and the benchmark build it.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import normalizers, pre_tokenizers
from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor

TINY_IMAGE_SIZE = 64
TINY_VISION_LAYERS = 2
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]  # BLIP's decoder starts from [DEC]


def build_tiny_processor(captions: Iterable[str], image_size: int = TINY_IMAGE_SIZE) -> BlipProcessor:
    """A BLIP processor whose tokenizer knows exactly the words of `captions` (lower-cased, BERT-split), resizing
    images to `image_size` pixels square."""
    words = sorted(set(caption_words(captions)) - set(SPECIAL_TOKENS))
    assert words, "the tiny vocabulary needs at least one caption"
    # The PIL backend: the default one needs torchvision, which is not a dependency.
    images = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    return BlipProcessor(image_processor=images, tokenizer=_tiny_tokenizer(SPECIAL_TOKENS + words))


def _tiny_tokenizer(tokens: list[str]) -> BertTokenizer:
    """Whole-word vocabulary: token i has id i."""
    vocab = {token: i for i, token in enumerate(tokens)}
    return BertTokenizer(vocab=vocab, do_lower_case=True, bos_token="[DEC]", model_max_length=64)


def extend_vocabulary(model: BlipForConditionalGeneration, processor: BlipProcessor, captions: Iterable[str],
                      seed: int) -> BlipProcessor:
    """The processor with the captions' unknown words appended to its tokenizer, and the model's embeddings resized
    to match, so those words are learned instead of read as [UNK]. Known words keep their ids (and embeddings)."""
    known = processor.tokenizer.get_vocab()
    new = sorted(set(caption_words(captions)) - set(known))
    if not new:
        return processor
    tokens = sorted(known, key=known.get) + new
    assert [known[t] for t in tokens[:len(known)]] == list(range(len(known))), "the vocabulary's ids are contiguous"
    tokenizer = _tiny_tokenizer(tokens)
    with torch.random.fork_rng():  # the new rows' seeded init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model.resize_token_embeddings(len(tokenizer))
    return BlipProcessor(image_processor=processor.image_processor, tokenizer=tokenizer)


def caption_words(captions: Iterable[str]) -> list[str]:
    """Words as a lower-casing BERT tokenizer splits them (the same rules the tiny tokenizer applies)."""
    normalizer, splitter = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    return [word for caption in captions for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(caption))]


def tiny_config(vocab_size: int, bos_token_id: int, sep_token_id: int, pad_token_id: int,
                image_size: int = TINY_IMAGE_SIZE, vision_layers: int = TINY_VISION_LAYERS) -> BlipConfig:
    """Sized so that a few hundred steps run in about a minute on a 2-core CPU. The defaults put 66% of a forward
    pass's FLOPs in the vision encoder; image_size=96, vision_layers=4 put 86% there, as in BLIP-base (84%)."""
    hidden = 128
    vision = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=vision_layers,
                  num_attention_heads=4, image_size=image_size, patch_size=8)
    text = dict(vocab_size=vocab_size, hidden_size=hidden, encoder_hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                bos_token_id=bos_token_id, eos_token_id=sep_token_id, sep_token_id=sep_token_id,
                pad_token_id=pad_token_id)
    return BlipConfig(vision_config=vision, text_config=text, projection_dim=hidden)


def build_tiny_model(processor: BlipProcessor, seed: int,
                     vision_layers: int = TINY_VISION_LAYERS) -> BlipForConditionalGeneration:
    """The tiny architecture for this processor's vocabulary and image size, seeded random weights."""
    tok = processor.tokenizer
    config = tiny_config(len(tok), tok.bos_token_id, tok.sep_token_id, tok.pad_token_id,
                         image_size=processor.image_processor.size["height"], vision_layers=vision_layers)
    with torch.random.fork_rng():  # seeded init without disturbing the caller's RNG
        torch.manual_seed(seed)
        return BlipForConditionalGeneration(config)
