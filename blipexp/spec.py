"""ExperimentSpec: one experiment as typed fields with help text, validated, overridable by key=value.

Experiments subclass it as "parent + diff": a subclass assigns new defaults to existing fields (plain
class attributes are enough; they are turned into dataclass fields here) and may declare a search space.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

from . import trainer_args
from .fields import (
    arg,
    arg_dict,
    field_types,
    first_paragraph,
    matches,
    parse,
    redeclare_plain_overrides,
    require,
    type_name,
)
from .metrics import METRIC_KEYS
from .search_space import SearchDim, check_space

HUB_MODEL = "Salesforce/blip-image-captioning-base"
HUB_DATASET = "ybelkada/football-dataset"
TINY_MODEL = "tiny"  # the offline preset: BLIP architecture from a small BlipConfig, pretrained on generated scenes
TINY_RANDOM_MODEL = "tiny-random"  # the same architecture from random weights (comparisons with the pretrained start)
PITCH_DATASET = "pitch"  # the embedded, generated football scenes
OBJECTIVES = METRIC_KEYS + ("loss",)
LOWER_IS_BETTER = frozenset({"loss"})  # objectives where smaller wins; every caption metric is higher-is-better
# lora_targets presets: names of BlipForConditionalGeneration's Linear layers (the tiny preset and BLIP-base alike)
_DECODER_ATTENTION = (r"text_decoder\.bert\.encoder\.layer\.\d+\.(attention|crossattention)\."
                      r"(self\.(query|key|value)|output\.dense)")
_VISION_ATTENTION = r"vision_model\.encoder\.layers\.\d+\.self_attn\.(qkv|projection)"
LORA_PRESETS = {
    "decoder": "text decoder attention (self and cross: query, key, value, output)",
    "decoder+vision": "text decoder attention and vision encoder attention (qkv, projection)",
}
LORA_PATTERNS = {"decoder": _DECODER_ATTENTION, "decoder+vision": f"{_DECODER_ATTENTION}|{_VISION_ATTENTION}"}




@dataclass
class ExperimentSpec:
    """Base spec: subclasses state their hypothesis in the docstring and change defaults."""

    name: ClassVar[str] = ""  # the experiment file's stem, set by the catalog
    _docstring: ClassVar[str | None] = None

    # --- model
    model: str = arg(HUB_MODEL, f"Hub id, local folder saved with save_pretrained, '{TINY_MODEL}' (offline preset, "
                     f"pretrained on generated scenes) or '{TINY_RANDOM_MODEL}' (the same from random weights)")
    model_revision: str = arg("main", "Hub revision (branch, tag or commit) when `model` is a Hub id")
    freeze_vision_encoder: bool = arg(False, "Train the text decoder only; the vision encoder's weights stay fixed")
    cache_vision_features: bool = arg(
        True, "With a frozen vision encoder, compute its outputs once and reuse them in every epoch, trial and run "
        "(stored under <home>/cache/vision, keyed by data, image-processor settings and model)")
    adapter: Literal["none", "lora"] = arg(
        "none", "'lora': train small low-rank adapters (PEFT LoRA) on the layers lora_targets names, every other "
        "weight fixed; merged into the model when training ends. 'none': train the model's own weights")
    lora_r: int = arg(8, "Rank of each LoRA adapter (adapter=lora): more rank, more trainable parameters")
    lora_alpha: int = arg(16, "LoRA scaling: an adapter's update is multiplied by lora_alpha / lora_r")
    lora_dropout: float = arg(0.05, "Dropout on the LoRA adapters' input while training")
    lora_targets: str = arg(
        "decoder", f"Layers LoRA adapts: {', '.join(f'{k!r} ({v})' for k, v in LORA_PRESETS.items())}, or a "
        "regular expression matched against whole module names (e.g. "
        r"'text_decoder\..*\.crossattention\.self\.(query|value)')")

    # --- data
    dataset: str = arg(HUB_DATASET, f"Hub dataset id, local folder (metadata.jsonl or captions.csv), or '{PITCH_DATASET}'")
    dataset_revision: str = arg(
        "main", f"Hub revision (branch, tag or commit) when `dataset` is a Hub id; ignored for a folder and '{PITCH_DATASET}'")
    dataset_split: str = arg("train", "Split to read from a Hub dataset that has no own held-out splits (or with splits=random)")
    splits: Literal["auto", "own", "random"] = arg(
        "auto", "train/validation/test: 'own' uses the dataset's own splits (Hub splits, split sub-folders or column, "
        "Karpathy/COCO files), 'random' blipexp's seeded split by the fractions below, 'auto' own ones when it has any")
    image_column: str = arg("image", "Column holding the image (file name in a local folder)")
    caption_column: str = arg("text", "Column holding the caption: a string, or a list of reference captions")
    val_fraction: float = arg(0.2, "Share of images held out for validation (per-epoch metrics, model selection), "
                              "when the split is blipexp's")
    test_fraction: float = arg(0.1, "Share of images held out for the final test (never used for selection)")
    split_seed: int = arg(42, "Seed of the train/validation/test split; the same seed gives the same split")
    pitch_scenes: int = arg(640, f"Number of generated scenes when dataset is '{PITCH_DATASET}'")
    max_bad_fraction: float = arg(0.5, "Abort when more than this share of samples is unusable (corrupt image, empty caption)")
    max_caption_tokens: int = arg(40, "Captions are truncated to this many tokens for training")

    # --- training
    learning_rate: float = arg(5e-5, "Peak learning rate of AdamW")
    epochs: int = arg(5, "Training epochs; validation metrics are computed after each")
    train_batch_size: int = arg(8, "Images per training step on each device")
    eval_batch_size: int = arg(16, "Images per generation batch during evaluation")
    gradient_accumulation_steps: int = arg(1, "Steps whose gradients are summed before an optimizer update")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    warmup_ratio: float = arg(0.0, "Share of training steps with a linear learning-rate warm-up")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = arg(
        "linear", "Learning-rate schedule after warm-up"
    )
    max_grad_norm: float = arg(1.0, "Gradient clipping norm (0 turns clipping off)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = arg(
        "auto", "Numeric precision; auto picks bf16 on GPUs that have it, fp16 on other GPUs; on CPU bf16 when a "
        "probe of this machine (seconds, cached in <home>/cache/precision.json) measures it >= 1.15x fp32, else fp32"
    )
    seed: int = arg(42, "Seed for model init, data order and dropout")
    dataloader_workers: int = arg(
        -1, "DataLoader processes decoding images while the model trains (0: in the main process; -1: auto, none for "
        "small data or cached features, else one per core but one, up to 4)")
    gradient_checkpointing: bool = arg(
        False, "Recompute activations in the backward pass instead of keeping them: less memory, more time per step")
    torch_compile: bool = arg(
        False, "The Trainer compiles the model's forward with torch.compile (inductor): training steps; generate() "
        "stays eager. The first step compiles (minutes on a CPU; needs a C++ compiler)")
    trainer: dict[str, Any] = arg_dict(
        "Any other Seq2SeqTrainingArguments field, e.g. {'label_smoothing_factor': 0.1}; "
        "--set trainer.label_smoothing_factor=0.1")
    early_stopping_patience: int = arg(
        0, "Stop training after this many epochs without an improvement of the objective (0: train every epoch); "
        "the best epoch's model is kept")
    early_stopping_threshold: float = arg(
        0.0, "Smallest change of the objective that counts as an improvement for early_stopping_patience")

    # --- generation and objective
    max_new_tokens: int = arg(30, "Longest generated caption, in tokens")
    num_beams: int = arg(1, "Beam width for generation (1: greedy)")
    min_new_tokens: int = arg(0, "Shortest generated caption, in tokens (0: no minimum; the end token waits until then)")
    length_penalty: float = arg(
        1.0, "Beam search only: a beam's score is its log-likelihood / length**length_penalty (> 1 favours longer "
        "captions, < 1 shorter)")
    repetition_penalty: float = arg(1.0, "Divides the score of tokens already generated (1: none; 1.2-1.5 curbs "
                                    "repeated words)")
    no_repeat_ngram_size: int = arg(0, "No n-gram of this many tokens appears twice in a caption (0: off)")
    prompt: str = arg(
        "", "Text every caption starts with, e.g. 'a photograph of' (BLIP's conditional captioning): trained on with "
        "its tokens out of the loss, generated from, and cut from the caption before scoring and serving. "
        "Empty: unconditional")
    sample_captions: int = arg(8, "Validation images whose predicted captions are logged as a table")
    val_subset: int = arg(
        256, "Per-epoch validation scores a fixed subset of this many images when the validation split is larger "
        "(fast epochs and pruning); the best model is then scored on the full split. 0: always the full split")
    objective_metric: str = arg("cider", f"Metric that selects the best epoch and trial: one of {', '.join(OBJECTIVES)}")
    cider_df: Literal["auto", "split", "corpus"] = arg(
        "auto", "Where CIDEr's idf comes from: 'split' the scored images' own references (pycocoevalcap; 0 for a single "
        "image), 'corpus' the training + validation references, 'auto' corpus below 50 scored images. "
        "The pycocoevalcap value is logged as cider_coco either way")
    objective_direction: Literal["auto", "maximize", "minimize"] = arg(
        "auto", "Whether a higher objective is better; auto: minimize for loss, maximize for the caption metrics")
    bootstrap_resamples: int = arg(
        1000, "Bootstrap resamples of the scored images behind each final metric's 95% interval and each paired "
        "comparison (seeded by `seed`); 0: no intervals")

    # --- tracking and sweep
    mlflow_experiment: str = arg("", "MLflow experiment name (empty: the experiment's name)")
    registered_model: str = arg("blip-captioner", "Registered-model name in the MLflow Model Registry")
    n_trials: int = arg(1, "Total trials of a sweep (resuming counts trials already done)")
    prune: bool = arg(True, "Stop a sweep trial early when its per-epoch objective looks hopeless (`pruner` says how)")
    pruner: Literal["median", "paired"] = arg(
        "median", "How a sweep prunes: 'median', a trial's best objective so far below the median of complete trials' "
        "at the same point of their schedule; 'paired', its per-image validation scores significantly worse than the "
        "best trial's at that point, on the same images (prune_alpha; a caption-metric objective)")
    prune_alpha: float = arg(0.05, "pruner=paired: significance level of its paired test (p below it, the trial behind)")
    confirm_seeds: int = arg(
        0, "After a sweep, train the best trial's parameters again with this many fresh seeds and log the spread of "
        "the objective and test metrics over them, the best trial's own value beside (the registered version stays "
        "the best trial's)")
    system_metrics: bool = arg(
        True, "Log MLflow system metrics on each training run (CPU, memory, disk, network; GPU where present), sampled "
        "every 10 s ($MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL) in a background thread")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._docstring = cls.__dict__.get("__doc__")  # before dataclass() invents one from the signature
        redeclare_plain_overrides(cls)
        dataclass(cls)

    def __post_init__(self) -> None:
        self._check_types()
        require(self.learning_rate > 0, "learning_rate", self.learning_rate, "must be > 0, e.g. 5e-5")
        for key in ("epochs", "train_batch_size", "eval_batch_size", "gradient_accumulation_steps",
                    "max_new_tokens", "num_beams", "pitch_scenes", "n_trials"):
            require(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        require(self.max_caption_tokens >= 4, "max_caption_tokens", self.max_caption_tokens, "must be >= 4")
        for key in ("val_fraction", "test_fraction"):
            require(0 <= getattr(self, key) < 1, key, getattr(self, key), "must be in [0, 1)")
        require(self.val_fraction > 0, "val_fraction", self.val_fraction,
                 "must be > 0: validation metrics select the best model")
        require(self.val_fraction + self.test_fraction < 1, "val_fraction + test_fraction",
                 self.val_fraction + self.test_fraction, "must be < 1 to leave images for training")
        require(0 <= self.max_bad_fraction <= 1, "max_bad_fraction", self.max_bad_fraction, "must be in [0, 1]")
        require(0 <= self.warmup_ratio < 1, "warmup_ratio", self.warmup_ratio, "must be in [0, 1)")
        require(self.dataloader_workers >= -1, "dataloader_workers", self.dataloader_workers, "must be >= 0, or -1 (auto)")
        for key in ("weight_decay", "max_grad_norm", "sample_captions", "val_subset", "bootstrap_resamples",
                    "confirm_seeds"):
            require(getattr(self, key) >= 0, key, getattr(self, key), "must be >= 0")
        self._check_generation()
        self.trainer = trainer_args.check(self.trainer)  # text values parsed to the field's type
        require(self.early_stopping_patience >= 0, "early_stopping_patience", self.early_stopping_patience,
                 "must be >= 0 (0 turns early stopping off), e.g. 2")
        require(self.early_stopping_threshold >= 0, "early_stopping_threshold", self.early_stopping_threshold,
                 "must be >= 0: the objective's smallest change that counts as an improvement, e.g. 0.01")
        require(self.objective_metric in OBJECTIVES, "objective_metric", self.objective_metric,
                 f"must be one of {', '.join(OBJECTIVES)}")
        require(0 < self.prune_alpha < 1, "prune_alpha", self.prune_alpha, "must be in (0, 1), e.g. 0.05")
        require(self.pruner != "paired" or self.objective_metric in METRIC_KEYS, "pruner", self.pruner,
                 f"tests per-image scores, which objective_metric={self.objective_metric!r} has none of: "
                 "--set pruner=median")
        natural = self._natural_direction
        require(self.objective_direction in ("auto", natural), "objective_direction", self.objective_direction,
                 f"contradicts objective_metric={self.objective_metric!r} (a {'lower' if natural == 'minimize' else 'higher'} "
                 f"{self.objective_metric} is better): --set objective_direction=auto (or {natural})")
        require(bool(self.model.strip()), "model", self.model, f"must name a Hub id, a folder or '{TINY_MODEL}'")
        require(bool(self.dataset.strip()), "dataset", self.dataset, f"must name a Hub id, a folder or '{PITCH_DATASET}'")
        self._check_lora()
        check_space(self.search_space(), field_types(type(self)))

    # --- behaviour subclasses may extend

    def search_space(self) -> dict[str, SearchDim]:
        """Dimensions a sweep searches, keyed by field name. Empty: `run` trains once."""
        return {}

    def tiny_profile(self) -> dict[str, Any]:
        """Values `--tiny` applies: the offline preset, the embedded data, settings that suit both on a CPU."""
        tiny: dict[str, Any] = {
            "model": TINY_MODEL,
            "learning_rate": 2e-3,
            "epochs": 8,
            "train_batch_size": 32,
            "eval_batch_size": 64,
            "weight_decay": 0.01,
            "warmup_ratio": 0.05,
            "lr_scheduler": "linear",
            "max_caption_tokens": 24,
            "max_new_tokens": 20,
            "registered_model": f"{self.registered_model}-tiny",
        }
        if not Path(self.dataset).is_dir():  # a local folder the user named is kept
            tiny["dataset"] = PITCH_DATASET
        return tiny

    # --- derived values and transformations

    @property
    def hypothesis(self) -> str:
        """The class docstring's first paragraph, else the experiment file's (module) docstring's, without the
        "Hypothesis:" label the files start with (`show`, run descriptions and versions add their own)."""
        module = sys.modules.get(type(self).__module__)
        text = first_paragraph(type(self)._docstring or getattr(module, "__doc__", None) or "")
        label = "hypothesis:"
        return text[len(label):].lstrip() if text.lower().startswith(label) else text

    @property
    def experiment_name(self) -> str:
        return self.mlflow_experiment or self.name or type(self).__name__

    @property
    def is_tiny(self) -> bool:
        return self.model in (TINY_MODEL, TINY_RANDOM_MODEL)

    @property
    def profile(self) -> str:
        """"tiny" (the offline preset) or "full": tagged on runs and versions so the two never mix."""
        return "tiny" if self.is_tiny else "full"

    @property
    def lora_pattern(self) -> str:
        """lora_targets as a regular expression over whole module names: a preset's, or the field itself."""
        return LORA_PATTERNS.get(self.lora_targets, self.lora_targets)

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """The objective's direction, resolved: the one value every selection (epoch, trial, promotion) uses."""
        return self._natural_direction if self.objective_direction == "auto" else self.objective_direction

    @property
    def greater_is_better(self) -> bool:
        return self.direction == "maximize"

    @property
    def _natural_direction(self) -> Literal["maximize", "minimize"]:
        return "minimize" if self.objective_metric in LOWER_IS_BETTER else "maximize"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def params(self) -> dict[str, Any]:
        """to_dict with each `trainer` entry as its own key, `trainer.<name>`: the run's MLflow params."""
        flat = {k: v for k, v in self.to_dict().items() if k != "trainer"}
        return {**flat, **{trainer_args.PREFIX + k: v for k, v in self.trainer.items()}}

    def value(self, key: str) -> Any:
        """A field's value, or a `trainer.<name>` entry's (None when unset)."""
        if key.startswith(trainer_args.PREFIX):
            return self.trainer.get(key[len(trainer_args.PREFIX):])
        return getattr(self, key)

    def with_overrides(self, assignments: typing.Iterable[str]) -> "ExperimentSpec":
        """Apply `key=value` strings; values are parsed to the field's type. Raises ValueError."""
        changes = {}
        for text in assignments:
            key, sep, raw = text.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ValueError(f"override {text!r} is not key=value, e.g. --set learning_rate=1e-5")
            if key.startswith(trainer_args.PREFIX):
                changes[key] = trainer_args.parse(key[len(trainer_args.PREFIX):], raw.strip())
            else:
                changes[key] = self.parse_value(key, raw.strip())
        return self.replace(**changes)

    def replace(self, **changes: Any) -> "ExperimentSpec":
        """A copy with `changes`; a `trainer.<name>` key sets that entry of `trainer` (a sweep's parameter)."""
        passed = {k[len(trainer_args.PREFIX):]: changes.pop(k) for k in list(changes)
                  if k.startswith(trainer_args.PREFIX)}
        if passed:
            changes["trainer"] = {**changes.get("trainer", self.trainer), **passed}
        for key in changes:
            self.field_info(key)  # unknown keys raise with suggestions
        return dataclasses.replace(self, **changes)

    def tiny(self) -> "ExperimentSpec":
        return self.replace(**self.tiny_profile())

    @classmethod
    def field_info(cls, key: str) -> dataclasses.Field:
        by_name = {f.name: f for f in fields(cls)}
        if key not in by_name:
            close = difflib.get_close_matches(key, by_name, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else "`blipexp show NAME` lists the fields"
            raise ValueError(f"unknown spec field {key!r}: {hint}")
        return by_name[key]

    @classmethod
    def parse_value(cls, key: str, raw: str) -> Any:
        return parse(key, raw, field_types(cls)[cls.field_info(key).name])

    # --- validation helpers

    def _check_types(self) -> None:
        for key, hint in field_types(type(self)).items():
            value = getattr(self, key)
            if not matches(value, hint):
                raise ValueError(f"{key}={value!r} has the wrong type: expected {type_name(hint)}")

    def _check_lora(self) -> None:
        require(self.lora_r >= 1, "lora_r", self.lora_r, "must be >= 1, e.g. 8")
        require(self.lora_alpha >= 1, "lora_alpha", self.lora_alpha, "must be >= 1, e.g. 2 * lora_r")
        require(0 <= self.lora_dropout < 1, "lora_dropout", self.lora_dropout, "must be in [0, 1)")
        try:  # whether it matches any layer is checked against the model (modeling.add_lora)
            re.compile(self.lora_pattern)
        except re.error as exc:
            raise ValueError(f"lora_targets={self.lora_targets!r} is neither a preset ({', '.join(LORA_PRESETS)}) "
                             f"nor a valid regular expression ({exc}): --set lora_targets=decoder") from None

    def _check_generation(self) -> None:
        require(0 <= self.min_new_tokens <= self.max_new_tokens, "min_new_tokens", self.min_new_tokens,
                 f"must be in [0, max_new_tokens={self.max_new_tokens}]")
        require(self.repetition_penalty > 0, "repetition_penalty", self.repetition_penalty,
                 "must be > 0 (1: no penalty, e.g. 1.2 to curb repeats)")
        require(self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size", self.no_repeat_ngram_size,
                 "must be >= 0 (0: off)")
        require(self.prompt == self.prompt.strip(), "prompt", self.prompt,
                 f"has spaces at an end: --set prompt={self.prompt.strip()!r}")
