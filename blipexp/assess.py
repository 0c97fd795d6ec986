"""`evaluate` and `compare`: any model scored on a split of a spec's data as it is served, every metric with its 95%
interval, and two models compared on the same images with a paired test. Scored splits are read from the
evaluation cache when the same model was scored on the same data with the same settings before (a training run
leaves its own there), so a comparison of registered versions captions nothing again.

A model is named as the command line names it: `models:/NAME/VERSION` or `models:/NAME@ALIAS` (a registered
version: trained with the spec its run logged), a run id (its model folder in this home), a folder saved with
`save_pretrained` (with `--experiment NAME` for the data), or an experiment's name (its untrained base model).
"""
from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from . import eval_cache, evidence, generation, tracking
from .data.sources import CaptionData
from .evaluation import SplitScores, format_scores, intervals_note, log_per_image
from .spec import ExperimentSpec

SPLITS = ("validation", "test", "train")
RUN_ID = re.compile(r"[0-9a-f]{32}")


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
    data: CaptionData | None = dataclasses.field(default=None, repr=False)  # the data scored (the tables' pictures)


# --------------------------------------------------------------------------- naming a model


def resolve(name: str, home: Path, experiment: ExperimentSpec | None = None) -> Target:
    """The model `name` names (see the module docstring). `experiment`: the spec a folder or base model is scored
    with (from --experiment); for a version or run, their own logged spec is used."""
    if name.startswith("models:/"):
        return _version_target(name)
    if RUN_ID.fullmatch(name):
        return _run_target(name, home)
    if Path(name).expanduser().is_dir():
        folder = Path(name).expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise ValueError(f"{folder} holds no model saved with save_pretrained (no config.json): pass a model "
                             "folder, a models:/ URI, a run id or an experiment name")
        if experiment is None:
            raise ValueError("a model folder says nothing of the data to score it on: add --experiment NAME (the "
                             "experiment whose data and settings to use), e.g. --experiment football_baseline")
        return Target(name, experiment, None, lambda scratch: folder)
    if experiment is not None:
        return Target(name, experiment, None, lambda scratch: _base_model_folder(experiment, home, scratch))
    raise ValueError(f"{name!r} names no model: pass models:/NAME/VERSION, models:/NAME@ALIAS, a run id, a folder "
                     "saved with save_pretrained, or an experiment name (its base model)")


def _version_target(uri: str) -> Target:
    client = mlflow.MlflowClient()
    body = uri[len("models:/"):]
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = body.rpartition("/")
            version = client.get_model_version(name, number)
    except (mlflow.exceptions.MlflowException, ValueError) as exc:
        raise ValueError(f"no registered version {uri}: `python -m blipexp models` lists them") from exc
    pinned = f"models:/{version.name}/{version.version}"
    return Target(uri if uri == pinned else f"{uri} (version {version.version})", logged_spec(version.run_id),
                  version.tags.get("data_fingerprint"), lambda scratch: _download(pinned, scratch),
                  weights=version.tags.get("weights_digest"), run_id=version.run_id, version=version)


def _run_target(run_id: str, home: Path) -> Target:
    folder = home / "checkpoints" / run_id / "model"
    if not folder.is_dir():
        raise ValueError(f"run {run_id} has no model folder in {home} (sweeps keep the best trial's only): evaluate "
                         "its registered version instead (python -m blipexp models), or pass --home where it trained")
    fingerprint = tracking.Run(run_id).read().data.tags.get("data_fingerprint")
    return Target(run_id, logged_spec(run_id), fingerprint, lambda scratch: folder, run_id=run_id)


def logged_spec(run_id: str) -> ExperimentSpec:
    """The spec a run trained with, from its spec.json (fields this blipexp no longer has are dropped), as a class
    named like its experiment's (its `name` the experiment's, for run names and tags), not today's file."""
    try:
        experiment = mlflow.get_experiment(tracking.Run(run_id).read().info.experiment_id).name
    except mlflow.exceptions.MlflowException as exc:
        raise ValueError(f"no run {run_id} in this store: check the id, or pass --home where it trained") from exc
    logged = tracking.Run(run_id).logged_dict("spec.json")
    if not logged or "spec" not in logged:
        raise ValueError(f"run {run_id} has no spec.json: it was not made by blipexp")
    known = {f.name for f in dataclasses.fields(ExperimentSpec)}
    values = {key: value for key, value in logged["spec"].items() if key in known}
    named = type(logged.get("class") or "LoggedSpec", (ExperimentSpec,), {"name": logged.get("experiment") or ""})
    return named(**{**values, "mlflow_experiment": values.get("mlflow_experiment") or experiment})


def _download(uri: str, scratch: Path) -> Path:
    from .serving import hf_folder

    return hf_folder(uri, scratch)


def _base_model_folder(spec: ExperimentSpec, home: Path, scratch: Path) -> Path:
    """The experiment's untrained model, saved once in the scratch folder (for the tiny presets, with the data's
    words added as training would)."""
    from .data import load_data
    from .modeling import load_model_and_processor
    from .progress import no_weight_progress_bars

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
    from .data import load_data

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
                      scores.signature(spec.bootstrap_resamples, spec.seed), data.fingerprint, cached, data=data)


def check_unseen(target: Target, data, examples, split: str) -> None:
    """Incomparable when `examples` of data other than the target's own hold images (by content) it was trained or
    selected on, as its run's data manifest lists them: its score there would be no test. On its own data the split
    keeps them apart; a model with no run (a folder, a base model) or no manifest is not checked."""
    from .data import manifest

    if target.run_id is None or target.fingerprint == data.fingerprint:
        return
    logged = tracking.Run(target.run_id).logged_dict(manifest.ARTIFACT) or {}
    learnt = {digest for digest, _, held in logged.get("images", {}).values() if held != "test" and digest}
    scored = manifest.build(data)["images"]  # today's digests, in the form the manifest keeps them
    overlap = [e.key for e in examples if scored[e.key][0] in learnt]
    if overlap:
        raise Incomparable(f"{len(overlap)} of the {len(examples)} {split} images of {data.source} are images "
                           f"{target.label} was trained or selected on ({manifest.names(overlap)}): its score there "
                           "is no test. Judge on a set that holds none of them (--set dataset=...)")


def _score(folder: Path, data, examples, split: str, spec: ExperimentSpec, settings: dict) -> SplitScores:
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    from .evaluation import score_split
    from .progress import no_weight_progress_bars
    from .trainer import dataloader_workers

    with no_weight_progress_bars():
        model = BlipForConditionalGeneration.from_pretrained(str(folder))
        processor = BlipProcessor.from_pretrained(str(folder))
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    return score_split(model, processor, data, examples, split, spec, settings,
                       dataloader_workers(spec, data, processor, cached=False))


def log_evaluation(target: Target, evaluation: Evaluation, home: Path) -> str:
    """An MLflow run holding the evaluation (metrics with intervals, signature, the per-image table), in the
    model's experiment, tagged with the version or run it scored and linked to the version's logged model."""
    scores, split = evaluation.scores, evaluation.scores.split
    tracking.use_experiment(target.spec.experiment_name, home)
    tags = {"blipexp.role": "evaluation", "evaluated_model": target.label, "data_fingerprint": evaluation.fingerprint,
            f"{split}_signature": evaluation.signature, "profile": target.spec.profile,
            **({"evaluated_run_id": target.run_id} if target.run_id else {}),
            **({"evaluated_version": f"{target.version.name}/{target.version.version}"} if target.version else {})}
    with tracking.new_run(f"evaluate-{split}", tags=tags) as run:
        run.params({"split": split, "images": len(scores.keys), "cached": evaluation.cached,
                    "bootstrap_resamples": target.spec.bootstrap_resamples, **generation.settings(target.spec)})
        run.metrics({**{f"{split}_{k}": v for k, v in scores.metrics.items()},
                     **{f"{split}_{k}_ci_{side}": getattr(i, side)
                        for k, i in evaluation.intervals.items() for side in ("low", "high")}})
        log_per_image(run, evaluation.data, scores)
        model_id = logged_model_id(target.version) if target.version is not None else None
        if model_id:
            run.link_model(model_id)
    return run.id


def logged_model_id(version) -> str | None:
    """The MLflow 3 logged model behind a registered version: its model_id, which a sqlite store leaves empty, else
    the id its source names (models:/m-...)."""
    source = version.source or ""
    return version.model_id or (source[len("models:/"):] if source.startswith("models:/m-") else None)


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


# --------------------------------------------------------------------------- promote


REQUIRE = ("not-worse", "better")  # promote's rules: refuse a significantly worse candidate / anything not better


def promotion_judge(home: Path, require: str = "not-worse", alpha: float = evidence.ALPHA,
                    overrides: tuple[str, ...] = (), record: Callable | None = None) -> Callable:
    """registry.promote's judge: the candidate against the alias's holder as `compare` does, on the candidate's
    test images (its data, or the set --set dataset= names), on the objective metric; see promotion_refusal. Two
    versions that cannot be compared (other data each, images one learnt from) are refused too, so --force can
    override every refusal. `record(comparison, candidate target)`: logs the comparison, returns its run id or None."""
    from .registry import Judgement

    if require not in REQUIRE:
        raise ValueError(f"--require {require!r}: use one of {', '.join(REQUIRE)}")
    evidence.check_alpha(alpha)

    def judge(candidate, holder) -> Judgement:
        new, held = (_version_target(f"models:/{v.name}/{v.version}") for v in (candidate, holder))
        who = f"version {candidate.version} (B) against version {holder.version} (A)"
        always = {"promote_compared_with": str(holder.version), "promote_rule": f"{require}, alpha {alpha:g}"}
        try:
            try:
                comparison, note = compare(held, new, home, "test", overrides, data=new), ""
            except EmptySplit:  # a model trained without a test split: its validation images are all there is
                comparison = compare(held, new, home, "validation", overrides, data=new)
                note = ("\nnote: the data have no test split, so the versions were compared on the validation "
                        "images, which chose the candidate's epoch: its lead there is optimistic")
        except Incomparable as exc:
            return Judgement(str(exc), f"{who}: not compared", {**always, "promote_not_compared": str(exc)[:4000]})
        difference = comparison.differences[comparison.metric]
        evidence_tags = {"promote_metric": comparison.metric, "promote_difference": difference.difference,
                         "promote_ci_low": difference.ci_low, "promote_ci_high": difference.ci_high,
                         "promote_p_value": difference.p_value, "promote_images": difference.images,
                         "promote_split": comparison.a.scores.split,
                         "promote_data_fingerprint": comparison.a.fingerprint}
        tags = {**always, **{key: f"{value:.6g}" if isinstance(value, float) else str(value)
                           for key, value in evidence_tags.items() if value is not None}}  # none on too few images
        refusal = promotion_refusal(difference, require, alpha, str(candidate.version), str(holder.version))
        run_id = record(comparison, new) if record else None
        if run_id:
            tags["promote_comparison_run"], note = run_id, f"{note}\n  run         {run_id}"
        return Judgement(refusal, f"{who}\n{comparison.describe(alpha)}{note}", tags)

    return judge


def promotion_refusal(difference: evidence.Difference, require: str, alpha: float, candidate: str,
                      holder: str) -> str | None:
    """Why the candidate (B) may not replace the holder (A), or None. Both rules read the two-sided paired test at
    `alpha` that the printed verdict reads: "worse" is p < alpha with the candidate behind, "better" p < alpha with
    it ahead, so each is in effect a one-sided test at alpha / 2. Too few images for a test refuse only "better"."""
    if difference.significant(alpha) and difference.difference < 0:
        return f"version {candidate} is significantly worse than version {holder}"
    if require != "better" or (difference.significant(alpha) and difference.difference > 0):
        return None
    if not difference.tested:
        return (f"version {candidate} cannot be shown better than version {holder} (--require better): "
                f"{evidence.too_few(difference.images)}")
    return (f"version {candidate} is not significantly better than version {holder} (--require better: a two-sided "
            f"p < {alpha:g} with the candidate ahead; p = {difference.p_value:.3f})")


def to_json_text(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=2, sort_keys=False)
