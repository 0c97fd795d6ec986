"""ExperimentSpec: one experiment as typed fields with help text, validated (validation.py), overridable by
key=value.

Experiments subclass it as "parent + diff": a subclass assigns new defaults to existing fields (plain
class attributes are enough; they are turned into dataclass fields here) and may declare a search space.
"""
from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

from . import trainer_args
from .fields import arg, arg_dict, field_types, first_paragraph, parse, redeclare_plain_overrides
from .metric_keys import LOWER_IS_BETTER, METRIC_KEYS, OBJECTIVES
from .presets import HUB_DATASET, HUB_MODEL, LORA_PATTERNS, LORA_PRESETS, PITCH_DATASET, TINY_MODEL, TINY_RANDOM_MODEL
from .search_space import SearchDim
from .validation import validate


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
    pruner: Literal["auto", "median", "paired"] = arg(
        "auto", "How a sweep prunes: 'paired', a trial's per-image validation scores significantly worse than the best "
        "trial's at the same point of its schedule, on the same images (prune_alpha; a caption-metric objective); "
        "'median', its best objective so far below the median of complete trials' at that point; 'auto': paired for "
        "a caption-metric objective, median for loss (the benchmark's comparison: docs/sweeps.md)")
    prune_alpha: float = arg(0.05, "pruner=paired: significance level of its paired test (p below it, the trial behind)")
    confirm_seeds: int = arg(
        0, "After a sweep, train the confirm_top best trials' parameters again with this many fresh seeds each (never "
        "a trial's own) and log the spread of the objective and test metrics over them; 0: no confirmation")
    confirm_top: int = arg(
        1, "With confirm_seeds: how many of the best configurations are confirmed. 1: the best trial is registered, "
        "its spread over the fresh seeds beside; K >= 2 (confirm_seeds >= 2): the configuration with the best mean "
        "validation objective over its fresh seeds is registered (its original trial's model)")
    system_metrics: bool = arg(
        True, "Log MLflow system metrics on each training run (CPU, memory, disk, network; GPU where present), sampled "
        "every 10 s ($MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL) in a background thread")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._docstring = cls.__dict__.get("__doc__")  # before dataclass() invents one from the signature
        redeclare_plain_overrides(cls)
        dataclass(cls)

    def __post_init__(self) -> None:
        validate(self)

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
        return self.natural_direction if self.objective_direction == "auto" else self.objective_direction

    @property
    def greater_is_better(self) -> bool:
        return self.direction == "maximize"

    @property
    def pruner_used(self) -> Literal["median", "paired"]:
        """The pruner a sweep uses: `pruner`, with auto resolved (paired needs per-image scores, which loss has none of)."""
        if self.pruner != "auto":
            return self.pruner
        return "paired" if self.objective_metric in METRIC_KEYS else "median"

    @property
    def natural_direction(self) -> Literal["maximize", "minimize"]:
        """The objective's own direction: minimize for the loss, maximize for the caption metrics."""
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
