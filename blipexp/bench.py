"""`python -m blipexp.bench`: blipexp's speed against the notebook's loop and the machine's limit, in one run.

Sections (each a function below, each returns plain numbers):
  peak       matrix-multiply throughput, fp32 and bf16: the machine's limit
  training   the notebook's loop, a plain loop and blipexp's Trainer path on the BLIP-base architecture
             (random init: no download), full fine-tuning / frozen encoder / cached features; FLOPs and MFU
  generation captions/s, batched vs one image at a time
  trial      one tiny trial: the share of its time spent in evaluation, and in MLflow logging + our callbacks
  sweep      the tiny football_lr_sweep: blipexp with cache and pruning, without them, full fine-tuning, and
             HF `Trainer.hyperparameter_search(backend="optuna")` on the same space, trial count and data

It prints each figure as it is measured, then writes report.json and report.md to --out. `--quick` swaps
BLIP-base for the tiny architecture and shrinks every section: a smoke check (CI runs it), not a measurement.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import itertools
import json
import os
import platform
import random
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, TrainerCallback
from transformers.trainer_callback import PrinterCallback

from .data.collator import CaptionCollator
from .data.features import CaptionDataset
from .feature_cache import PassThroughVision, encode_vision
from .modeling import SPECIAL_TOKENS
from .spec import ExperimentSpec

NOTEBOOK_PAD = 512  # BLIP-base's tokenizer: model_max_length 512, which padding="max_length" pads to
CAPTION_TOKENS = (18, 24)  # a short and a long news-photo caption, [CLS] and [SEP] included


@dataclasses.dataclass(frozen=True)
class Size:
    """How big each section runs: the full benchmark or the --quick smoke check."""

    name: str
    model: str  # "base": BLIP-base architecture; "tiny": blipexp's tiny preset architecture
    batch: int
    warmup_steps: int
    steps: int
    captions: int  # generation benchmark
    new_tokens: int
    matmul_n: int
    matmul_seconds: float
    sweep_trials: int
    sweep_scenes: int


FULL = Size("full", "base", batch=2, warmup_steps=2, steps=3, captions=8, new_tokens=20, matmul_n=4096,
            matmul_seconds=3.0, sweep_trials=8, sweep_scenes=640)
QUICK = Size("quick", "tiny", batch=2, warmup_steps=1, steps=2, captions=4, new_tokens=5, matmul_n=512,
             matmul_seconds=0.2, sweep_trials=1, sweep_scenes=30)


def log(message: str) -> None:
    print(message, flush=True)


# --- 1. the machine's limit

def matmul_peak(dtype: torch.dtype, n: int, seconds: float) -> float:
    """Sustained GFLOP/s of n x n matrix products, after a warm-up."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=out)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b, out=out)
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - started) / 1e9


def bench_peak(size: Size) -> dict:
    # The best of two sizes: larger products run closer to the limit (here 2048: ~130, 4096: ~160 GFLOP/s).
    # bf16 at 1024 only: CPUs without bf16 matrix units run it orders of magnitude slower.
    sizes = (size.matmul_n // 2, size.matmul_n)
    fp32 = {n: matmul_peak(torch.float32, n, size.matmul_seconds) for n in sizes}
    best = max(fp32, key=fp32.get)
    result = {"fp32_gflops": fp32[best], "fp32_size": best,
              "bf16_gflops": matmul_peak(torch.bfloat16, min(size.matmul_n, 1024), size.matmul_seconds)}
    log(f"peak: fp32 {result['fp32_gflops']:.0f} GFLOP/s ({best}x{best} matmul), bf16 {result['bf16_gflops']:.1f} "
        f"GFLOP/s, {torch.get_num_threads()} threads")
    return result


# --- 2-3. training throughput

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
        from .modeling import tiny_config

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


def notebook_batch(tokenizer, pixels: torch.Tensor, captions: list[str], pad_to: int) -> dict:
    """What the notebook's dataset + processor hand the model: every caption padded to max_length."""
    text = tokenizer(captions, padding="max_length", max_length=pad_to, return_tensors="pt")
    return {"pixel_values": pixels, "input_ids": text["input_ids"], "attention_mask": text["attention_mask"],
            "labels": text["input_ids"]}  # the notebook's labels=input_ids: pads are trained on too


def timed_steps(step: Callable[[], None], warmup: int, steps: int) -> float:
    """Seconds for `steps` calls after `warmup` unmeasured ones (the first steps pay allocator and kernel set-up)."""
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - started


def loop_step(model, batches: Iterator[dict], optimizer) -> Callable[[], None]:
    def step() -> None:
        loss = model(**next(batches)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def flops_per_sample(model, batch: dict) -> float:
    """Model FLOPs of one training step (forward + backward) divided by the batch size."""
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(batch["pixel_values"])


class _StepClock(TrainerCallback):
    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def trainer_samples_per_second(model, dataset, collator, size: Size, batch: int, out: Path) -> tuple[float, list[dict]]:
    """blipexp's Trainer and arguments (fused AdamW, fp32 on CPU), only the step count and evaluation changed."""
    from .train import CaptionTrainer, training_arguments

    spec = ExperimentSpec().replace(model="tiny", dataset="pitch", learning_rate=5e-5, train_batch_size=batch)
    args = dataclasses.replace(
        training_arguments(spec, out, steps_per_epoch=1, echo=False),
        max_steps=size.warmup_steps + size.steps, eval_strategy="no", save_strategy="no", eval_on_start=False,
        load_best_model_at_end=False, logging_steps=10_000, disable_tqdm=True,
        train_sampling_strategy="sequential")  # the same batches as the plain loop below
    clock = _StepClock()
    trainer = CaptionTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                             callbacks=[clock], generation_kwargs={})
    batches = [batch for batch, _ in zip(trainer.get_train_dataloader(), range(size.warmup_steps + size.steps))]
    trainer.train()
    measured = clock.ends[size.warmup_steps - 1:]
    return batch * size.steps / (measured[-1] - measured[0]), batches


# blipexp's paths: (key, batch size, frozen encoder, cached features). Batch 2 is the notebook's; 8 is the
# spec's default, where the optimizer's fixed cost per step is spread over more samples.
TRAINING_PATHS = (("full", 2, False, False), ("frozen", 2, True, False), ("cached", 2, True, True),
                  ("full_b8", 8, False, False), ("cached_b8", 8, True, True))


def bench_training(size: Size, peak_fp32_gflops: float, out: Path) -> dict:
    tokenizer = synthetic_tokenizer(30524 if size.model == "base" else 2000)
    model = build_model(size, tokenizer)
    image_size = model.config.vision_config.image_size
    pad_to = NOTEBOOK_PAD if size.model == "base" else model.config.text_config.max_position_embeddings
    largest = max(batch for _, batch, _, _ in TRAINING_PATHS)
    pixels, captions = synthetic_data(largest, tokenizer, image_size)
    result: dict = {"model": "BLIP-base (random init)" if size.model == "base" else "tiny BLIP",
                    "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6, "batch": size.batch,
                    "caption_tokens": list(CAPTION_TOKENS), "notebook_pad_to": pad_to,
                    "warmup_steps": size.warmup_steps, "measured_steps": size.steps}
    peak = peak_fp32_gflops * 1e9

    # the notebook: torch's default AdamW, lr 5e-5, every caption padded to the tokenizer's max length
    nb = notebook_batch(tokenizer, pixels[: size.batch], captions[: size.batch], pad_to)
    result["notebook_flops_per_sample"] = flops_per_sample(model, nb)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    seconds = timed_steps(loop_step(model, itertools.repeat(nb), optimizer), size.warmup_steps, size.steps)
    result["notebook"] = size.batch * size.steps / seconds
    result["notebook_mfu"] = result["notebook"] * result["notebook_flops_per_sample"] / peak
    log(f"training: notebook loop {result['notebook']:.3f} samples/s (padded to {pad_to} tokens)")
    del model, optimizer

    collator = CaptionCollator(tokenizer, tokenizer.bos_token_id, max_tokens=40)
    for key, batch, frozen, cached in TRAINING_PATHS:
        model = build_model(size, tokenizer)
        rows = pixels[:batch]
        if frozen:
            model.vision_model.requires_grad_(False)
        if cached:
            rows = encode_vision(model.vision_model, rows)
            model.vision_model = PassThroughVision()
        items = [(i % batch, captions[i % batch]) for i in range(batch * (size.warmup_steps + size.steps))]
        result[key], batches = trainer_samples_per_second(model, CaptionDataset(rows, items), collator, size, batch,
                                                          out / key)
        result[f"{key}_flops_per_sample"] = flops_per_sample(model, batches[0])
        result[f"{key}_mfu"] = result[key] * result[f"{key}_flops_per_sample"] / peak
        log(f"training: blipexp {key} (batch {batch}) {result[key]:.3f} samples/s, "
            f"{result[f'{key}_flops_per_sample'] / 1e9:.1f} GFLOP/sample, MFU {result[f'{key}_mfu']:.0%}")
        if key == "full":  # the same padded batches in a plain loop with the same optimizer: the Trainer's cost
            del model
            model = build_model(size, tokenizer)
            optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
            seconds = timed_steps(loop_step(model, itertools.cycle(batches), optimizer), size.warmup_steps, size.steps)
            result["plain"] = batch * size.steps / seconds
            result["plain_mfu"] = result["plain"] * result["full_flops_per_sample"] / peak
            log(f"training: plain loop, blipexp's padded batches {result['plain']:.3f} samples/s")
        del model
    return result


# --- 4. generation

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


# --- 5. a trial's time: evaluation and tracking

class Stopwatch:
    """Wall time spent inside wrapped functions, per bucket; nested calls of one bucket count once.
    `clock`: seconds from any fixed point (a test passes a fake one)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.seconds: dict[str, float] = {}
        self._depth: dict[str, int] = {}
        self._clock = clock

    def wrap(self, bucket: str, function: Callable) -> Callable:
        @functools.wraps(function)
        def timed(*args, **kwargs):
            depth = self._depth.get(bucket, 0)
            self._depth[bucket] = depth + 1
            started = self._clock()
            try:
                return function(*args, **kwargs)
            finally:
                self._depth[bucket] = depth
                if depth == 0:
                    self.seconds[bucket] = self.seconds.get(bucket, 0.0) + self._clock() - started

        return timed


TRACKING_CALLS = ("start_run", "end_run", "log_metric", "log_metrics", "log_param", "log_params", "set_tag",
                  "set_tags", "log_dict", "log_table", "log_figure")


@contextlib.contextmanager
def instrumented(watch: Stopwatch) -> Iterator[None]:
    """Time MLflow's logging calls and our callback (bucket "tracking") and evaluation (bucket "evaluation")."""
    import mlflow
    import mlflow.tracking.fluent as fluent

    from .callbacks import CaptionMetricsCallback
    from .train import CaptionTrainer

    targets = [(module, name) for name in TRACKING_CALLS for module in (mlflow, fluent) if hasattr(module, name)]
    targets += [(CaptionMetricsCallback, name) for name in ("on_log", "on_evaluate", "flush")]
    originals = [(owner, name, getattr(owner, name)) for owner, name in targets]
    originals.append((CaptionTrainer, "evaluate", CaptionTrainer.evaluate))
    for owner, name, function in originals:
        setattr(owner, name, watch.wrap("evaluation" if name == "evaluate" else "tracking", function))
    try:
        yield
    finally:
        for owner, name, function in originals:
            setattr(owner, name, function)


def bench_trial(size: Size, home: Path) -> dict:
    from . import catalog, tracking
    from .data import load_data
    from .train import train_trial

    spec = catalog.load("football_baseline", catalog.experiments_dir()).tiny().replace(pitch_scenes=size.sweep_scenes)
    if size.name == "quick":
        spec = spec.replace(epochs=1)
    tracking.configure(home)
    tracking.use_experiment("bench-trial", home)
    data = load_data(spec, home)
    watch = Stopwatch()
    with instrumented(watch):
        started = time.perf_counter()
        train_trial(spec, data, home, echo=False)
        total = time.perf_counter() - started
    result = {"seconds": total, "epochs": spec.epochs, "evaluation_seconds": watch.seconds.get("evaluation", 0.0),
              "tracking_seconds": watch.seconds.get("tracking", 0.0)}
    result["evaluation_share"] = result["evaluation_seconds"] / total
    result["tracking_share"] = result["tracking_seconds"] / total
    log(f"trial: {total:.1f}s, evaluation {result['evaluation_share']:.0%}, "
        f"MLflow + callbacks {result['tracking_share']:.1%}")
    return result


# --- 6. sweeps

def bench_sweeps(size: Size, root: Path) -> dict:
    from . import catalog

    base = catalog.load("football_lr_sweep", catalog.experiments_dir()).tiny()
    if size.name == "quick":  # one or two epochs a trial: the smoke check's budget
        base = _one_epoch_variant(base)
    base = base.replace(n_trials=size.sweep_trials, pitch_scenes=size.sweep_scenes)
    ways = {
        "blipexp: frozen encoder, feature cache, pruning": base.replace(freeze_vision_encoder=True),
        "blipexp: frozen encoder, no cache, no pruning": base.replace(freeze_vision_encoder=True,
                                                                     cache_vision_features=False, prune=False),
        "blipexp: full fine-tuning, pruning": base,
    }
    if size.name == "quick":
        ways.pop("blipexp: full fine-tuning, pruning")
    results = {}
    for way, spec in ways.items():
        results[way] = _blipexp_sweep(spec, root / f"sweep-{len(results)}")
        log(f"sweep: {way}: {results[way]['seconds']:.0f}s, best {spec.objective_metric} {results[way]['best']:.3f}")
    way = "HF Trainer.hyperparameter_search (optuna), full fine-tuning"
    results[way] = _hf_sweep(base, root / "sweep-hf")
    log(f"sweep: {way}: {results[way]['seconds']:.0f}s, best {base.objective_metric} {results[way]['best']:.3f}")
    return results


def _one_epoch_variant(spec: ExperimentSpec) -> ExperimentSpec:
    from .spec import IntRange

    space = {**spec.search_space(), "epochs": IntRange(1, 2)}
    variant = type(f"{type(spec).__name__}Quick", (type(spec),), {"search_space": lambda self: space})
    variant.name = type(spec).name
    return variant(**spec.to_dict())


def _blipexp_sweep(spec: ExperimentSpec, home: Path) -> dict:
    from optuna.trial import TrialState

    from . import tracking
    from .data import load_data
    from .sweep import run_sweep

    tracking.configure(home)
    tracking.use_experiment(spec.experiment_name, home)
    data = load_data(spec, home)
    started = time.perf_counter()
    result = run_sweep(spec, data, home, echo=False)
    seconds = time.perf_counter() - started
    states = [t.state for t in result.study.trials]
    return {"seconds": seconds, "best": result.best_trial.value if result.best_trial else float("nan"),
            "best_params": result.best_trial.params if result.best_trial else {},
            "trials": len(states), "pruned": states.count(TrialState.PRUNED)}


def _hf_sweep(spec: ExperimentSpec, home: Path) -> dict:
    """What a user of HF's own search would write: model_init, hp_space, the last evaluation as objective.

    It gets blipexp's dataset, collator and generation-only evaluation (Seq2SeqTrainer's own would feed the
    reference caption to generate()), and the same seeded TPE sampler. HF's study prunes with Optuna's default
    MedianPruner; there is no MLflow logging and no test evaluation, which only favours it.
    """
    import optuna

    from .data import load_data
    from .data.features import encode_images, evaluation_dataset, training_dataset
    from .modeling import build_tiny_model, build_tiny_processor
    from .train import CaptionTrainer, compute_metrics_for, training_arguments

    data = load_data(spec, home)
    processor = build_tiny_processor(c for e in data.train for c in e.captions)
    encode = lambda examples: encode_images(processor.image_processor, [e.image for e in examples])  # noqa: E731
    train_set = training_dataset(encode(data.train), data.train)
    val_set, val_refs = evaluation_dataset(encode(data.validation), data.validation)
    args = dataclasses.replace(training_arguments(spec, home / "hf", steps_per_epoch=1, echo=False),
                               save_strategy="no", load_best_model_at_end=False, eval_on_start=False,
                               logging_strategy="no")
    trainer = CaptionTrainer(
        model_init=lambda trial: build_tiny_model(processor, seed=spec.seed), args=args, train_dataset=train_set,
        eval_dataset=val_set, data_collator=CaptionCollator(processor.tokenizer, processor.tokenizer.bos_token_id,
                                                            spec.max_caption_tokens),
        compute_metrics=compute_metrics_for(processor.tokenizer, val_refs),
        generation_kwargs={"max_new_tokens": spec.max_new_tokens, "num_beams": spec.num_beams})
    trainer.remove_callback(PrinterCallback)  # it prints every evaluation's dict
    space = spec.search_space()
    names = {"learning_rate": "learning_rate", "epochs": "num_train_epochs"}
    assert set(space) <= set(names), f"the HF comparison maps only {sorted(names)}"

    def hp_space(trial):
        from .sweep import suggest

        return {names[key]: suggest(trial, key, dim) for key, dim in space.items()}

    started = time.perf_counter()
    best = trainer.hyperparameter_search(
        hp_space=hp_space, compute_objective=lambda metrics: metrics[f"eval_{spec.objective_metric}"],
        n_trials=spec.n_trials, direction=spec.direction, backend="optuna",
        sampler=optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=4))
    return {"seconds": time.perf_counter() - started, "best": best.objective, "best_params": best.hyperparameters,
            "trials": spec.n_trials}


# --- report

def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": datetime.date.today().isoformat(), "commit": commit}


def targets(report: dict) -> list[tuple[str, str, float, float]]:
    """(target, how it is measured, measured ratio, required ratio), for the sections the report has."""
    rows = []
    if "training" in report:
        t = report["training"]
        rows.append(("full fine-tuning vs the notebook loop", "samples/s ratio", t["full"] / t["notebook"], 1.5))
        rows.append(("full fine-tuning vs a plain loop on the same batches", "samples/s ratio", t["full"] / t["plain"], 0.95))
        rows.append(("full fine-tuning MFU, batch 2", "share of measured fp32 matmul peak", t["full_mfu"], 0.60))
        rows.append(("full fine-tuning MFU, batch 8", "share of measured fp32 matmul peak", t["full_b8_mfu"], 0.60))
        rows.append(("cached features vs the notebook loop, both batch 2", "samples/s ratio",
                     t["cached"] / t["notebook"], 5.0))
        rows.append(("cached features at batch 8 vs the notebook loop", "samples/s ratio",
                     t["cached_b8"] / t["notebook"], 5.0))
    if "generation" in report:
        g = report["generation"]
        rows.append(("batched vs one-at-a-time generation", "captions/s ratio", g["batched"] / g["single"], 4.0))
        rows.append(("... from cached features", "captions/s ratio", g["cached_batched"] / g["cached_single"], 4.0))
    if "sweep" in report:
        fast = report["sweep"]["blipexp: frozen encoder, feature cache, pruning"]
        hf = report["sweep"]["HF Trainer.hyperparameter_search (optuna), full fine-tuning"]
        rows.append(("cached + pruned sweep vs HF hyperparameter_search", "wall-time speed-up",
                     hf["seconds"] / fast["seconds"], 3.0))
        rows.append(("... with an equal or better best objective", "best CIDEr ratio", fast["best"] / hf["best"], 1.0))
    if "trial" in report:
        rows.append(("MLflow + callback overhead", "share of trial time (at most)", report["trial"]["tracking_share"], 0.03))
    return rows


def met(name: str, measured: float, required: float) -> bool:
    return measured <= required if "at most" in name else measured >= required


def markdown(report: dict, command: str) -> str:
    m = report["machine"]
    lines = [f"Command: `{command}`  ", f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), "
             f"torch {m['torch']}{', ' + m['cuda'] if m['cuda'] else ''}  ",
             f"Date: {m['date']}, commit {m['commit']}, mode {report['size']}, total {report['seconds'] / 60:.1f} min", "",
             "| target | measure | measured | required | met |", "|---|---|---|---|---|"]
    for name, measure, measured, required in targets(report):
        ok = met(measure, measured, required)
        lines.append(f"| {name} | {measure} | {measured:.2f} | {required:.2f} | {'yes' if ok else 'NO'} |")
    lines += ["", f"Machine limit: fp32 matmul {report['peak']['fp32_gflops']:.0f} GFLOP/s (the better of two sizes, "
              f"{report['peak']['fp32_size']}), bf16 {report['peak']['bf16_gflops']:.1f} GFLOP/s; MFU below is against "
              "the fp32 figure."]
    for section, write in (("training", _training_md), ("generation", _generation_md), ("trial", _trial_md),
                           ("sweep", _sweep_md), ("data", _data_md)):
        if section in report:
            lines += [""] + write(report)
    return "\n".join(lines) + "\n"


def _training_md(report: dict) -> list[str]:
    t = report["training"]
    lines = [f"Training, {t['model']} ({t['parameters_m']:.0f} M parameters), batch {t['batch']} unless named, captions of "
              f"{t['caption_tokens'][0]} and {t['caption_tokens'][1]} tokens; {t['measured_steps']} steps timed after "
              f"{t['warmup_steps']} warm-up steps:", "",
              "| path | samples/s | GFLOP/sample | MFU |", "|---|---|---|---|"]
    rows = [("notebook loop (fp32, AdamW, padded to %d, labels=input_ids)" % t["notebook_pad_to"], "notebook",
             "notebook_flops_per_sample"),
            ("plain loop on blipexp's padded batches (fused AdamW)", "plain", "full_flops_per_sample"),
            ("blipexp Trainer, full fine-tuning", "full", "full_flops_per_sample"),
            ("blipexp Trainer, frozen vision encoder", "frozen", "frozen_flops_per_sample"),
            ("blipexp Trainer, cached vision features", "cached", "cached_flops_per_sample"),
            ("blipexp Trainer, full fine-tuning, batch 8", "full_b8", "full_b8_flops_per_sample"),
            ("blipexp Trainer, cached vision features, batch 8", "cached_b8", "cached_b8_flops_per_sample")]
    for label, key, flops in rows:
        mfu = t[key] * t[flops] / (report["peak"]["fp32_gflops"] * 1e9)
        lines.append(f"| {label} | {t[key]:.3f} | {t[flops] / 1e9:.1f} | {mfu:.0%} |")
    return lines


def _generation_md(report: dict) -> list[str]:
    g = report["generation"]
    return [f"Generation, {g['captions']} images, {g['new_tokens']} new tokens each (greedy, KV cache): "
              f"from pixels, batched {g['batched']:.2f} captions/s and one at a time {g['single']:.2f}; from cached "
              f"features, batched {g['cached_batched']:.2f} and one at a time {g['cached_single']:.2f}."]


def _trial_md(report: dict) -> list[str]:
    tr = report["trial"]
    return [f"One tiny `football_baseline` trial ({tr['epochs']} epochs): {tr['seconds']:.1f}s; evaluation "
              f"{tr['evaluation_share']:.0%} of it, MLflow logging + our callbacks {tr['tracking_share']:.1%}."]


def _sweep_md(report: dict) -> list[str]:
    from .sweep import format_param

    lines = ["Tiny `football_lr_sweep`, the same search space, trial count and data:", "",
              "| way | wall time | best val CIDEr | trials (pruned) | best params |", "|---|---|---|---|---|"]
    for way, r in report["sweep"].items():
        params = ", ".join(f"{k}={format_param(v)}" for k, v in r["best_params"].items())
        pruned = f" ({r['pruned']})" if "pruned" in r else ""
        lines.append(f"| {way} | {r['seconds']:.0f} s | {r['best']:.3f} | {r['trials']}{pruned} | {params} |")
    return lines


def _data_md(report: dict) -> list[str]:
    from .bench_data import markdown as data_markdown

    return data_markdown(report["data"])


def run(size: Size, sections: list[str]) -> dict:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    report: dict = {"size": size.name, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="blipexp-bench-") as scratch:
        work = Path(scratch)
        if "peak" in sections:
            report["peak"] = bench_peak(size)
        if "training" in sections:
            report["training"] = bench_training(size, report["peak"]["fp32_gflops"], work / "training")
        if "generation" in sections:
            report["generation"] = bench_generation(size)
        if "trial" in sections:
            report["trial"] = bench_trial(size, work / "trial")
        if "sweep" in sections:
            report["sweep"] = bench_sweeps(size, work)
        if "data" in sections:
            from .bench_data import bench_data

            report["data"] = bench_data(**DATA_SIZES[size.name], root=work / "data", log=log)
    report["seconds"] = time.perf_counter() - started
    return report


SECTIONS = ["peak", "training", "generation", "trial", "sweep", "data"]
# photos per folder, batches timed per loader, and up to which size the old eager path is run for comparison
DATA_SIZES = {"full": dict(sizes=[1000, 5000, 20000], batches=40, eager_up_to=1000),
              "quick": dict(sizes=[24], batches=2, eager_up_to=24)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blipexp.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke check in about a minute, not a measurement")
    parser.add_argument("--out", default="bench-results", help="folder for report.json and report.md")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS,
                        help="run these sections only (peak always runs: MFU needs it)")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    command = "python -m blipexp.bench" + (" --quick" if args.quick else "")
    if args.only != SECTIONS:
        command += " --only " + " ".join(args.only)
    log(f"{command}: {size.name} mode")
    report = run(size, ["peak", *args.only])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    text = markdown(report, command)
    (out / "report.md").write_text(text)
    log("\n" + text + f"\nwritten: {out / 'report.json'}, {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
