"""`evaluate` and `compare`: any model scored on a split of a spec's data as it is served, every metric with its 95%
interval, and two models compared on the same images with a paired test. Scored splits are read from the
evaluation cache when the same model was scored on the same data with the same settings before (a training run
leaves its own there), so a comparison of registered versions captions nothing again.

A model to score is a `Target`: how it was made and how to get its weights. A folder saved with `save_pretrained`
(`folder_target`) and an experiment's untrained base model (`base_model_target`) are made here; a run's model in
the store is tracking/evaluations.py's `run_target`, a registered version registry/versions.py's `version_target`,
and cli/judge.py's `resolve` turns what the command line names into one of them.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..experiment.spec import ExperimentSpec
from ..model import generation
from . import eval_cache, evidence
from .evaluation import SplitScores, format_scores, intervals_note

SPLITS = ("validation", "test", "train")


@dataclass
class Target:
    """A model to score: how it was made (its spec), and how to get its weights."""

    label: str  # as the user named it
    spec: ExperimentSpec  # its run's spec, or the named experiment's
    fingerprint: str | None  # the data it was trained on (None: unknown, e.g. a base model)
    find: Callable[[Path], Path]  # writes or finds its from_pretrained folder (given a scratch folder)
    weights: str | None = None  # its folder's digest when known without fetching it (a version's tag)
    run_id: str | None = None
    version: Any = None  # the registered ModelVersion, if any
    # the digests of the images it was trained or selected on (its run's data manifest); None: not known
    learnt: Callable[[], set[str]] | None = None
    _found: dict[Path, Path] = dataclasses.field(default_factory=dict)

    def folder(self, scratch: Path) -> Path:
        """Its from_pretrained folder, fetched into `scratch` once."""
        if scratch not in self._found:
            self._found[scratch] = self.find(scratch)
        return self._found[scratch]

    def digest(self, scratch: Path) -> str:
        if self.weights is None:
            self.weights = eval_cache.weights_digest(self.folder(scratch))
        return self.weights


class EmptySplit(ValueError):
    """The split asked for holds no image."""


class Incomparable(ValueError):
    """Two models cannot be judged on these images: other data each, or images one of them learnt from."""


@dataclass
class Evaluation:
    """A target's scored split: the captions and per-image scores, intervals, and how they were made."""

    label: str
    scores: SplitScores
    intervals: dict[str, evidence.Interval]
    signature: str
    fingerprint: str  # of the data scored
    cached: bool
    run_id: str | None = None  # the evaluation run logged, if any


# --------------------------------------------------------------------------- a folder or a base model


def folder_target(name: str, experiment: ExperimentSpec | None) -> Target:
    """The model saved with save_pretrained in folder `name`, scored with `experiment`'s data and settings."""
    folder = Path(name).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} holds no model saved with save_pretrained (no config.json): pass a model "
                         "folder, a models:/ URI, a run id or an experiment name")
    if experiment is None:
        raise ValueError("a model folder says nothing of the data to score it on: add --experiment NAME (the "
                         "experiment whose data and settings to use), e.g. --experiment football_baseline")
    return Target(name, experiment, None, lambda scratch: folder)


def base_model_target(name: str, experiment: ExperimentSpec, home: Path) -> Target:
    """`experiment`'s untrained model, labelled `name`."""
    return Target(name, experiment, None, lambda scratch: _base_model_folder(experiment, home, scratch))


def _base_model_folder(spec: ExperimentSpec, home: Path, scratch: Path) -> Path:
    """The experiment's untrained model, saved once in the scratch folder (for the tiny presets, with the data's
    words added as training would)."""
    from ..data import load_data
    from ..model.modeling import load_model_and_processor
    from ..runtime.progress import no_weight_progress_bars

    folder = scratch / "base"
    if not folder.is_dir():
        data = load_data(spec, home, progress=False)
        model, processor = load_model_and_processor(spec, [c for e in data.train for c in e.captions], home, echo=False)
        with no_weight_progress_bars():
            model.save_pretrained(str(folder))
        processor.save_pretrained(str(folder))
    return folder


# --------------------------------------------------------------------------- evaluate


def evaluate(target: Target, home: Path, split: str = "test", overrides: tuple[str, ...] = (),
             data_spec: ExperimentSpec | None = None, use_cache: bool = True, echo: bool = True,
             unseen: bool = False) -> Evaluation:
    """Score `target` on `split` of its spec's data (with `overrides`), or of `data_spec`'s (a comparison scores
    both models on the first one's data): from the cache when it was scored so before. `unseen`: refuse images of
    other data that the target learnt from (check_unseen), before captioning any."""
    from ..data import load_data

    spec = (data_spec or target.spec).with_overrides(overrides)
    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    data = load_data(spec, home, progress=echo)
    examples = {"train": data.train, "validation": data.validation, "test": data.test}[split]
    if not examples:
        raise EmptySplit(f"the {split} split of {data.source} is empty (test_fraction=0, or the data have no {split} "
                         "split): pass --split validation")
    if unseen:
        check_unseen(target, data, examples, split)
    settings = {**generation.settings(target.spec.with_overrides(overrides))}
    with tempfile.TemporaryDirectory() as scratch:
        entry = eval_cache.key(target.digest(Path(scratch)), data.fingerprint, split, settings, spec.cider_df)
        stored = eval_cache.read(home, entry) if use_cache else None
        if stored is not None:
            scores, cached = SplitScores.from_json(stored), True
        else:
            if echo:
                print(f"captioning {len(examples)} {split} images with {target.label} ...", flush=True)
            scores, cached = _score(target.folder(Path(scratch)), data, examples, split, spec, settings), False
            eval_cache.write(home, entry, scores.to_json())
    return Evaluation(target.label, scores, scores.intervals(spec.bootstrap_resamples, spec.seed),
                      scores.signature(spec.bootstrap_resamples, spec.seed), data.fingerprint, cached)


def check_unseen(target: Target, data, examples, split: str) -> None:
    """Incomparable when `examples` of data other than the target's own hold images (by content) it was trained or
    selected on, as its run's data manifest lists them (`target.learnt`): its score there would be no test. On its
    own data the split keeps them apart; a model with no run (a folder, a base model) or no manifest is not checked."""
    from ..data import manifest

    if target.learnt is None or target.fingerprint == data.fingerprint:
        return
    learnt = target.learnt()
    scored = manifest.build(data)["images"]  # today's digests, in the form the manifest keeps them
    overlap = [e.key for e in examples if scored[e.key][0] in learnt]
    if overlap:
        raise Incomparable(f"{len(overlap)} of the {len(examples)} {split} images of {data.source} are images "
                           f"{target.label} was trained or selected on ({manifest.names(overlap)}): its score there "
                           "is no test. Judge on a set that holds none of them (--set dataset=...)")


def _score(folder: Path, data, examples, split: str, spec: ExperimentSpec, settings: dict) -> SplitScores:
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    from ..data.features import dataloader_workers
    from ..runtime.progress import no_weight_progress_bars
    from .evaluation import score_split

    with no_weight_progress_bars():
        model = BlipForConditionalGeneration.from_pretrained(str(folder))
        processor = BlipProcessor.from_pretrained(str(folder))
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    return score_split(model, processor, data, examples, split, spec, settings,
                       dataloader_workers(spec, data, processor, cached=False))


def describe(evaluation: Evaluation) -> str:
    """The console's report of an evaluation: every metric with its interval, how they were made, the worst
    captions."""
    scores = evaluation.scores
    lines = [f"{evaluation.label} on {len(scores.keys)} {scores.split} images"
             f"{' (from the evaluation cache)' if evaluation.cached else ''}",
             f"  {format_scores(scores.metrics, evaluation.intervals)}",
             f"  {intervals_note(evaluation.intervals, evaluation.signature, len(scores.keys))}",
             "  worst captions by cider:"]
    lines += [f"    {score:.3f}  {image}: {caption!r} (references: {' | '.join(refs)})"
              for image, caption, refs, score in scores.worst("cider")]
    return "\n".join(lines)


def as_json(evaluation: Evaluation) -> dict[str, Any]:
    return {"model": evaluation.label, "split": evaluation.scores.split, "images": len(evaluation.scores.keys),
            "cached": evaluation.cached, "signature": evaluation.signature, "run_id": evaluation.run_id,
            "metrics": {key: {"value": value,
                              **({"ci_low": evaluation.intervals[key].low, "ci_high": evaluation.intervals[key].high}
                                 if key in evaluation.intervals else {})}
                        for key, value in evaluation.scores.metrics.items()}}


# --------------------------------------------------------------------------- compare


@dataclass
class Comparison:
    """B against A on the same images of one split: per caption metric the paired difference."""

    a: Evaluation
    b: Evaluation
    differences: dict[str, evidence.Difference]
    metric: str  # the one the verdict is about (every compared metric is higher-is-better)
    resamples: int
    seed: int

    @property
    def images(self) -> int:
        return next(iter(self.differences.values())).images

    def verdict(self, alpha: float = evidence.ALPHA) -> str:
        return self.differences[self.metric].verdict(alpha, a="A", b="B")

    def as_json(self, alpha: float = evidence.ALPHA) -> dict[str, Any]:
        """`verdict_metric`: the one metric whose p decides the verdict; the others' p-values are uncorrected."""
        return {"images": self.images, "split": self.a.scores.split, "a": self.a.label, "b": self.b.label,
                "signature": evidence.signature(self.resamples, self.seed, self.a.scores.idf, self.images, "ar"),
                "verdict": self.verdict(alpha), "verdict_metric": self.metric,
                "metrics": {key: difference.as_dict() for key, difference in self.differences.items()}}

    def describe(self, alpha: float = evidence.ALPHA) -> str:
        rows = [("metric", "A", "B", "B - A", "95% interval", "p")]
        rows += [(f"{key} (verdict)" if key == self.metric else key, f"{d.a:.4f}", f"{d.b:.4f}",
                  f"{d.difference:+.4f}", "-" if d.ci_low is None else f"[{d.ci_low:+.4f}, {d.ci_high:+.4f}]",
                  "-" if d.p_value is None else f"{d.p_value:.3f}") for key, d in self.differences.items()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        table = ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        if self.differences[self.metric].tested:
            table.append(f"  p: each metric's own, uncorrected for testing {len(self.differences)} metrics; only "
                         f"{self.metric}'s decides the verdict")
        how = evidence.signature(self.resamples, self.seed, self.a.scores.idf, self.images, "ar")
        return "\n".join([f"A  {self.a.label}", f"B  {self.b.label}",
                          f"on {self.images} {self.a.scores.split} images (paired; {how})", *table,
                          self.verdict(alpha)])


def check_same_data(a: Target, b: Target, overrides: tuple[str, ...]) -> None:
    """Incomparable when the two were trained on data with different fingerprints and no common set was named."""
    if any(o.strip().startswith("dataset=") for o in overrides):
        return
    if a.fingerprint and b.fingerprint and a.fingerprint != b.fingerprint:
        raise Incomparable(f"{a.label} was trained on data {a.fingerprint} and {b.label} on data {b.fingerprint}: "
                           "their own test images differ, so their scores cannot be paired. Judge both on one set: "
                           "--set dataset=FOLDER_OR_HUB_ID")


def compare(a: Target, b: Target, home: Path, split: str = "test", overrides: tuple[str, ...] = (),
            echo: bool = True, data: Target | None = None) -> Comparison:
    """Both models captioned on the same images of `data`'s data (default A's; `overrides` apply to both),
    compared per metric. Incomparable: other data each, or images of other data one of them learnt from."""
    check_same_data(a, b, overrides)
    data_spec = (data or a).spec
    first = evaluate(a, home, split, overrides, data_spec=data_spec, echo=echo, unseen=True)
    second = evaluate(b, home, split, overrides, data_spec=data_spec, echo=echo, unseen=True)
    spec = data_spec.with_overrides(overrides)
    resamples = spec.bootstrap_resamples or 1000
    differences = first.scores.paired(second.scores, resamples, spec.seed)
    metric = spec.objective_metric if spec.objective_metric in differences else "cider"
    return Comparison(first, second, differences, metric, resamples, spec.seed)


def to_json_text(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=2, sort_keys=False)
