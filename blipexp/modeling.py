"""Model and processor: from a Hub id, a local folder, or the tiny offline preset.

The tiny preset is the real BLIP architecture (`BlipForConditionalGeneration`) built from a small
`BlipConfig` with random weights, and a BERT word-piece tokenizer whose vocabulary is the training
captions' words. Saved with `save_pretrained`, it loads exactly like a real checkpoint.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import normalizers, pre_tokenizers
from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor

from .data.sources import CaptionData
from .feature_cache import FeatureCache, PassThroughVision
from .hub import NotAHubId, hub_answers, looks_like_path
from .spec import HUB_MODEL, TINY_MODEL, ExperimentSpec

TINY_IMAGE_SIZE = 64
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]  # BLIP's decoder starts from [DEC]


MODEL_FIXES = ("Fix: run with --tiny (offline preset), or --set model=/path/to/folder (a folder saved with "
               "save_pretrained), or download the model where the Hub is reachable first.")


class ModelSourceError(ValueError):
    """The model named by the spec cannot be loaded; the message names the fix."""


def load_model_and_processor(spec: ExperimentSpec, captions: Iterable[str]) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    """Build or load the model the spec names. `captions` (training captions) and the prompt size the tiny vocabulary."""
    if spec.model == TINY_MODEL:
        processor = build_tiny_processor([*captions, spec.prompt])
        return build_tiny_model(processor, seed=spec.seed), processor
    if Path(spec.model).expanduser().is_dir():
        return _load_pretrained(str(Path(spec.model).expanduser()), revision=None)
    if looks_like_path(spec.model):
        raise ModelSourceError(f"model folder {spec.model!r} does not exist: pass a folder saved with save_pretrained, "
                               f"a Hub id such as {HUB_MODEL}, or use --tiny")
    return _load_pretrained(spec.model, revision=spec.model_revision)


def _load_pretrained(source: str, revision: str | None) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    """A local folder or the HF cache first (no network); the Hub only if it answers within seconds.

    Without network, from_pretrained retries for minutes before failing; the probe makes that seconds.
    """
    try:
        return _from_pretrained(source, revision, local_files_only=True)
    except (OSError, ValueError):
        pass
    try:
        answers = hub_answers(source, "model", revision)
    except NotAHubId as exc:
        raise ModelSourceError(f"{exc}. {MODEL_FIXES}") from None
    if not answers:
        raise ModelSourceError(f"cannot load model {source!r}: it is not in the HF cache and the Hugging Face Hub "
                               f"cannot be reached. {MODEL_FIXES}")
    try:
        return _from_pretrained(source, revision, local_files_only=False)
    except (OSError, ValueError) as exc:  # unknown id, gated repo, or a folder that is not BLIP
        raise ModelSourceError(f"cannot load model {source!r} ({type(exc).__name__}: {_first_line(exc)}). "
                               f"{MODEL_FIXES}") from exc


def _from_pretrained(source: str, revision: str | None, local_files_only: bool):
    kwargs = dict(revision=revision, local_files_only=local_files_only)
    processor = BlipProcessor.from_pretrained(source, **kwargs)
    return BlipForConditionalGeneration.from_pretrained(source, **kwargs), processor


def build_tiny_processor(captions: Iterable[str]) -> BlipProcessor:
    """A BLIP processor whose tokenizer knows exactly the words of `captions` (lower-cased, BERT-split)."""
    words = sorted(set(caption_words(captions)) - set(SPECIAL_TOKENS))
    assert words, "the tiny vocabulary needs at least one caption"
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + words)}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, bos_token="[DEC]", model_max_length=64)
    # The PIL backend: the default one needs torchvision, which is not a dependency.
    images = BlipImageProcessorPil(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    return BlipProcessor(image_processor=images, tokenizer=tokenizer)


def caption_words(captions: Iterable[str]) -> list[str]:
    """Words as a lower-casing BERT tokenizer splits them (the same rules the tiny tokenizer applies)."""
    normalizer, splitter = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    return [word for caption in captions for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(caption))]


def tiny_config(vocab_size: int, bos_token_id: int, sep_token_id: int, pad_token_id: int) -> BlipConfig:
    """Sized so that a few hundred steps run in about a minute on a 2-core CPU."""
    hidden = 128
    vision = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
                  image_size=TINY_IMAGE_SIZE, patch_size=8)
    text = dict(vocab_size=vocab_size, hidden_size=hidden, encoder_hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                bos_token_id=bos_token_id, eos_token_id=sep_token_id, sep_token_id=sep_token_id,
                pad_token_id=pad_token_id)
    return BlipConfig(vision_config=vision, text_config=text, projection_dim=hidden)


def build_tiny_model(processor: BlipProcessor, seed: int) -> BlipForConditionalGeneration:
    tok = processor.tokenizer
    config = tiny_config(len(tok), tok.bos_token_id, tok.sep_token_id, tok.pad_token_id)
    with torch.random.fork_rng():  # seeded init without disturbing the caller's RNG
        torch.manual_seed(seed)
        return BlipForConditionalGeneration(config)


@dataclass
class PreparedModel:
    """The model as a trial trains it: which parts learn, and where the vision inputs come from."""

    model: BlipForConditionalGeneration
    cache: FeatureCache | None  # the frozen encoder's outputs, computed once (None: batches carry pixels)

    @contextmanager
    def vision_inputs(self) -> Iterator[None]:
        """With cached features the batches carry encoder outputs: the vision model steps aside while they are used
        (training and scoring), and is back afterwards (saving, sample captions from pixels)."""
        if self.cache is None:
            yield
            return
        vision = self.model.vision_model
        self.model.vision_model = PassThroughVision()
        try:
            yield
        finally:
            self.model.vision_model = vision


def prepare_for_training(model: BlipForConditionalGeneration, processor: BlipProcessor, spec: ExperimentSpec,
                         data: CaptionData, home: Path, echo: bool) -> PreparedModel:
    """Adapt the model as the spec says: freeze the vision encoder, and with `cache_vision_features` train on its
    cached outputs (under `<home>/cache/vision`, shared by trials and runs) instead of running it every step."""
    if not spec.freeze_vision_encoder:
        return PreparedModel(model, cache=None)
    model.vision_model.requires_grad_(False)
    if not spec.cache_vision_features:
        return PreparedModel(model, cache=None)
    cache = FeatureCache(home / "cache" / "vision", model, processor.image_processor, data, model_name=spec.model,
                         revision=spec.model_revision, workers=max(0, spec.dataloader_workers), progress=echo)
    return PreparedModel(model, cache)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]
