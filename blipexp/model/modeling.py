"""Model and processor: from a Hub id, a local folder, or the tiny offline presets.

The tiny presets are the tiny BLIP (tiny.py). "tiny" is that model pretrained offline on generated scenes (see
pretrain.py; its vocabulary is fixed, and a user's captions may only add words to it); "tiny-random" has random
weights and a vocabulary of exactly the training captions' words. Saved with `save_pretrained`, either loads like a
real checkpoint.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import BlipForConditionalGeneration, BlipProcessor

from ..data.hub import NotAHubId, hub_answers, looks_like_path
from ..data.sources import CaptionData
from ..experiment.presets import HUB_MODEL, LORA_PRESETS, TINY_MODEL, TINY_RANDOM_MODEL
from ..experiment.spec import ExperimentSpec
from ..runtime.progress import no_weight_progress_bars
from .feature_cache import FeatureCache, PassThroughVision
from .pretrain import load_pretrained_tiny
from .tiny import build_tiny_model, build_tiny_processor, extend_vocabulary

MODEL_FIXES = ("Fix: run with --tiny (offline preset), or --set model=/path/to/folder (a folder saved with "
               "save_pretrained), or download the model where the Hub is reachable first.")


class ModelSourceError(ValueError):
    """The model named by the spec cannot be loaded; the message names the fix."""


def load_model_and_processor(spec: ExperimentSpec, captions: Iterable[str], home: Path,
                              echo: bool = True) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    """Build or load the model the spec names. `captions` (training captions) and the prompt give the tiny presets
    the words they lack; the pretrained tiny model is built once and cached under `home` (see pretrain.py)."""
    if spec.model == TINY_MODEL:
        with no_weight_progress_bars():
            model, processor = load_pretrained_tiny(home, echo=echo)
        return model, extend_vocabulary(model, processor, [*captions, spec.prompt], seed=spec.seed)
    if spec.model == TINY_RANDOM_MODEL:
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
        with no_weight_progress_bars():  # local files: a download (below) keeps its bars
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


@dataclass
class PreparedModel:
    """The model as a trial trains it: which parts learn, and where the vision inputs come from."""

    model: BlipForConditionalGeneration | PeftModel  # what the Trainer trains (with LoRA: the PEFT wrapper)
    cache: FeatureCache | None  # the frozen encoder's outputs, computed once (None: batches carry pixels)
    adaptation: str = "full fine-tuning"  # what learns, in words (the summary line)

    @property
    def blip(self) -> BlipForConditionalGeneration:
        """The BLIP model itself (with LoRA: inside the wrapper, its attention layers carrying the adapters)."""
        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    @property
    def is_lora(self) -> bool:
        return isinstance(self.model, PeftModel)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable and all parameters (logged as run params; LoRA's adapters count in both)."""
        parameters = list(self.model.parameters())
        return {"trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
                "total_parameters": sum(p.numel() for p in parameters)}

    def summary(self) -> str:
        counts = self.parameter_counts()
        trainable, total = counts["trainable_parameters"], counts["total_parameters"]
        return f"trainable: {_millions(trainable)} of {_millions(total)} parameters ({trainable / total:.1%}) — " \
               f"{self.adaptation}"

    def merge_lora(self, adapter_dir: Path) -> BlipForConditionalGeneration:
        """Save the LoRA adapter alone to `adapter_dir`, then fold it into the weights: the plain BLIP model
        returned saves as a checkpoint that from_pretrained loads without peft."""
        assert self.is_lora, "merge_lora needs adapter=lora"
        self.model.save_pretrained(str(adapter_dir))
        self.model = self.model.merge_and_unload()
        return self.model

    @contextmanager
    def vision_inputs(self) -> Iterator[None]:
        """With cached features the batches carry encoder outputs: the vision model steps aside while they are used
        (training and scoring), and is back afterwards (saving, sample captions from pixels)."""
        if self.cache is None:
            yield
            return
        blip = self.blip
        vision = blip.vision_model
        blip.vision_model = PassThroughVision()
        try:
            yield
        finally:
            blip.vision_model = vision


def prepare_for_training(model: BlipForConditionalGeneration, processor: BlipProcessor, spec: ExperimentSpec,
                         data: CaptionData, home: Path, echo: bool) -> PreparedModel:
    """Adapt the model as the spec says: freeze the vision encoder, and with `cache_vision_features` train on its
    cached outputs (under `<home>/cache/vision`, shared by trials and runs) instead of running it every step;
    with adapter=lora train LoRA adapters only. Prints the trainable parameters when echo."""
    cache = None
    adaptation = "full fine-tuning"
    if spec.freeze_vision_encoder:
        model.vision_model.requires_grad_(False)
        adaptation = "text decoder only (vision encoder frozen)"
        if spec.cache_vision_features:
            cache = FeatureCache(home / "cache" / "vision", model, processor.image_processor, data,
                                 model_name=spec.model, revision=spec.model_revision,
                                 workers=max(0, spec.dataloader_workers), progress=echo)
            adaptation = "text decoder only (vision encoder frozen, its features cached)"
    prepared = PreparedModel(model, cache, adaptation)
    if spec.adapter == "lora":
        targets = LORA_PRESETS.get(spec.lora_targets, f"layers matching {spec.lora_targets!r}")
        cached = ", vision features cached" if cache else ""
        prepared = PreparedModel(add_lora(model, spec), cache, f"lora r={spec.lora_r} on {targets}{cached}")
    if echo:
        print(prepared.summary(), flush=True)
    return prepared


def add_lora(model: BlipForConditionalGeneration, spec: ExperimentSpec) -> PeftModel:
    """The model wrapped with LoRA adapters on the Linear layers `spec.lora_targets` names; only they train."""
    pattern = spec.lora_pattern
    matched = {name: module for name, module in model.named_modules() if re.fullmatch(pattern, name)}
    fix = (f"--set lora_targets= one of {', '.join(LORA_PRESETS)}, or a regular expression matching whole names of "
           "Linear layers, e.g. text_decoder.bert.encoder.layer.0.attention.self.query")
    if not matched:
        raise ValueError(f"lora_targets={spec.lora_targets!r} matches no layer of the model: {fix}")
    not_linear = [name for name, module in matched.items() if not isinstance(module, torch.nn.Linear)]
    if not_linear:
        raise ValueError(f"lora_targets={spec.lora_targets!r} matches {not_linear[0]}, not a Linear layer "
                         f"(LoRA adapts Linear layers): {fix}")
    if spec.freeze_vision_encoder and any(name.startswith("vision_model.") for name in matched):
        raise ValueError(f"lora_targets={spec.lora_targets!r} adapts the vision encoder, which "
                         "freeze_vision_encoder=true keeps fixed: --set lora_targets=decoder, or --set "
                         "freeze_vision_encoder=false")
    config = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                        target_modules=pattern, bias="none")
    with torch.random.fork_rng():  # seeded adapter init without disturbing the caller's RNG
        torch.manual_seed(spec.seed)
        return get_peft_model(model, config)


def adapter_dir(model_dir: Path) -> Path:
    """Where a LoRA trial keeps its adapter alone: beside the (merged) model folder."""
    return Path(model_dir).parent / "adapter"


def _millions(count: int) -> str:
    return f"{count / 1e6:.3g}M" if count >= 1e6 else f"{count / 1e3:.3g}K"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]
