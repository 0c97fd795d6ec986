"""`blipexp rerun`: train a registered version (or a run) again from what its run logged, then say whether it
reproduced.

- The spec is the run's spec.json, never today's experiment file; the fields where that file now differs are
  printed. A version a sweep registered is its best trial's run: rerun trains that trial's parameters, with its seed,
  once.
- The data must have the fingerprint they had: otherwise the run's data manifest names what changed, and nothing
  trains without `--allow-data-change`.
- The environment the run recorded (environment.json) is compared with this machine's, every difference printed
  before training.
- After training: `reproduced exactly` when the weights digest, every per-image caption (validation and test) and
  every metric the runs logged (at full precision; those that time or measure the machine aside) are equal, and
  each of the three could be compared; otherwise what differs or could not be compared, and whether the two models
  differ beyond noise on the same test images (assess.compare). The new run is tagged blipexp.reproduces=<run id>
  and reproduction_result; a version, reproduced_by and reproduction_result.
- A variant (--set changing a logged field, or data allowed to change) is tagged blipexp.rerun_variant on its run and
  never writes the version's reproduction tags: it reproduces something else.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import registry, tracking
from ..data import load_data, manifest
from ..experiment import catalog
from ..experiment.spec import ExperimentSpec
from ..model import precision
from ..runtime import environment, interrupts
from ..scoring import assess, eval_cache, evidence
from ..tracking.evaluations import RUN_ID, logged_spec
from ..training.train import train_trial
from .args import home_of
from .judge import resolve

REPRODUCES_TAG = "blipexp.reproduces"
VARIANT_TAG = "blipexp.rerun_variant"  # on a variant rerun's run: what it changed
RESULT_TAG = "reproduction_result"
REPRODUCED_BY_TAG = "reproduced_by"
EXACT = "reproduced exactly"
SPLITS = ("validation", "test")  # the per-image tables every run logs (per_image/<split>.json)
MACHINE_METRICS = ("system/", "precision_probe_")  # metrics that measure the machine, not the model
Pair = tuple[float | None, float | None]  # a metric's (original, rerun) values; None: not logged on that side


@dataclass
class Reproduction:
    """What a rerun trained and how it compares with the original: weights, per-image captions, metrics."""

    original_run_id: str
    run_id: str
    weights: tuple[str | None, str | None]  # the model folders' digests (original, rerun); None: unknown
    captions: dict[str, tuple[int, int]]  # split -> (captions that differ, images), for the splits both logged
    metrics: int  # how many metrics were compared
    differences: dict[str, Pair]  # metric -> (original, rerun), only where they differ
    data_changed: bool = False
    variant: tuple[str, ...] = ()  # how it was trained otherwise than the original: fields --set changed, data
    noise: str = ""  # the paired comparison's verdict when not exact

    @property
    def found(self) -> list[str]:
        """What differs, one clause each."""
        found = ["weights differ"] if None not in self.weights and self.weights[0] != self.weights[1] else []
        found += [f"{n} of {images} {split} captions differ" for split, (n, images) in self.captions.items() if n]
        if self.differences:
            key, (before, after) = max(self.differences.items(), key=_distance)
            more = len(self.differences) - 1
            found.append(f"{key} {_pair(before, after)}" + (f" (and {more} more metric(s))" if more else ""))
        return found

    @property
    def uncompared(self) -> list[str]:
        """What could not be compared: nothing is 'exactly' then."""
        missing = ["weights not compared (no model folder of the original in this home, no weights_digest tag)"
                   ] if None in self.weights else []
        missing += [] if self.captions else ["no per-image captions to compare"]
        return missing + ([] if self.metrics else ["no metrics to compare"])

    @property
    def exact(self) -> bool:
        return not self.found and not self.uncompared

    def result(self) -> str:
        """One line, also the reproduction_result tag."""
        if self.exact:
            line = EXACT
        elif self.found:
            line = "not exactly: " + "; ".join(self.found + self.uncompared)
        else:
            line = "not shown exactly: nothing compared differs, but " + "; ".join(self.uncompared)
        line = f"{line}; {self.noise}" if self.noise else line
        return f"variant ({', '.join(self.variant)}): {line}" if self.variant else line

    def describe(self) -> str:
        before, after = (digest or "unknown" for digest in self.weights)
        rows = [f"rerun of run {self.original_run_id}: {self.result()}",
                f"  weights   {before}" + (" equal" if before == after != "unknown" else f" -> {after}"),
                "  captions  " + (", ".join(f"{n} of {images} {split}" for split, (n, images) in self.captions.items())
                                  + " differ" if self.captions else "none logged"),
                f"  metrics   {self.metrics} compared, {len(self.differences)} differ"]
        rows += [f"    {key:<22} {_pair(a, b)}" + (f"  ({b - a:+.6g})" if None not in (a, b) else "")
                 for key, (a, b) in sorted(self.differences.items())]
        return "\n".join([*rows, f"  run  {self.run_id}"])


def _distance(item: tuple[str, Pair]) -> float:
    """How far apart a metric's two values are (a value missing on one side: farthest)."""
    before, after = item[1]
    return math.inf if before is None or after is None else abs(after - before)


def _pair(before: float | None, after: float | None) -> str:
    """'0.51234 vs 0.51301': with the fewest significant digits (at least 5) that tell the two apart."""
    if before is None or after is None:
        return " vs ".join("not logged" if value is None else f"{value:.6g}" for value in (before, after))
    for digits in range(5, 18):
        if f"{before:.{digits}g}" != f"{after:.{digits}g}":
            return f"{before:.{digits}g} vs {after:.{digits}g}"
    return f"{before!r} vs {after!r}"


def rerun(name: str, home: Path, overrides: tuple[str, ...] = (), allow_data_change: bool = False,
          experiments: str | None = None, echo: bool = True) -> Reproduction:
    """Train `name` (models:/NAME/V, models:/NAME@ALIAS or a run id) again; see the module docstring."""
    tracking.configure(home)
    run_id, version = _original(name)
    logged = logged_spec(run_id)
    spec = logged.with_overrides(overrides)
    say = print if echo else (lambda *args, **kwargs: None)
    say(f"blipexp rerun {name}: run {run_id}" + (f", version {version.version}" if version else ""), flush=True)
    for line in catalog.drift_from_file(spec, experiments, overrides):
        say(f"  {line}", flush=True)
    original = tracking.Run(run_id).read()
    data = load_data(spec, home)
    data_changed = check_data(run_id, original.data.tags.get("data_fingerprint"), data, allow_data_change)
    if data_changed:
        say("  data changed (--allow-data-change): the scores are not comparable image for image", flush=True)
    for line in environment_differences(run_id, spec, home):
        say(f"  environment: {line}", flush=True)
    tracking.use_experiment(spec.experiment_name, home)
    variant = (*changed_fields(logged, spec), *(("changed data",) if data_changed else ()))
    result = train_trial(spec, data, home, run_name=f"rerun of {original.info.run_name or run_id}",
                         extra_tags={REPRODUCES_TAG: run_id, **({VARIANT_TAG: ", ".join(variant)} if variant else {})},
                         echo=echo)
    weights = (original_weights(run_id, version, home), eval_cache.weights_digest(result.model_dir))
    reproduction = reproduction_of(run_id, result.run_id, weights, data_changed, variant)
    if not reproduction.exact:
        reproduction.noise = _within_noise(run_id, version, result.run_id, home, data_changed)
    _record(reproduction, tracking.Run(result.run_id), version)
    return reproduction


def changed_fields(logged: ExperimentSpec, spec: ExperimentSpec) -> tuple[str, ...]:
    """The fields `spec` (the logged spec with --set) trains otherwise than the logged one, as key=value."""
    before, now = logged.to_dict(), spec.to_dict()
    return tuple(f"{key}={now[key]!r}" for key in now if before.get(key) != now[key])


def original_weights(run_id: str, version, home: Path) -> str | None:
    """The original model's weights digest: of its model folder in this home (the files themselves), else the one
    its version was tagged with; None when neither is there (a sweep trial whose model was not kept)."""
    folder = home / "checkpoints" / run_id / "model"
    if folder.is_dir():
        return eval_cache.weights_digest(folder)
    return version.tags.get("weights_digest") if version is not None else None


def reproduction_of(run_id: str, rerun_id: str, weights: tuple[str | None, str | None], data_changed: bool = False,
                    variant: tuple[str, ...] = ()) -> Reproduction:
    """The rerun against the original: every per-image caption and every metric their runs logged; `weights` the
    digests of their model folders."""
    before, after = (tracking.Run(r).read().data.metrics for r in (run_id, rerun_id))
    captions = {}
    for split in SPLITS:
        first, second = _captions(run_id, split), _captions(rerun_id, split)
        if first is not None and second is not None:
            images = first.keys() | second.keys()
            captions[split] = (sum(first.get(image) != second.get(image) for image in images), len(images))
    return Reproduction(run_id, rerun_id, weights, captions, len(compared_metrics(before, after)),
                        metric_differences(before, after), data_changed, variant)


def _captions(run_id: str, split: str) -> dict[str, str] | None:
    """image -> caption from the run's per-image table of `split`, or None when it logged none."""
    try:
        columns = tracking.Run(run_id).table_columns(f"per_image/{split}.json")
    except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact: the run logged none
        return None
    return dict(zip(columns["image"], columns["prediction"]))


def _original(name: str):
    """(run id, registered version or None) of what `name` names."""
    if name.startswith("models:/"):
        target = resolve(name, Path("."))  # a version: resolved in the store alone
        return target.run_id, target.version
    if not RUN_ID.fullmatch(name):
        raise ValueError(f"{name!r} names no version or run: pass models:/NAME/VERSION, models:/NAME@ALIAS or a run "
                         "id (`python -m blipexp models` lists versions and their runs)")
    return name, None


def check_data(run_id: str, fingerprint: str | None, data, allow: bool) -> bool:
    """True when the data differ from the run's (allowed); ValueError naming what changed when not allowed."""
    if not fingerprint or fingerprint == data.fingerprint:
        return False
    before = tracking.Run(run_id).logged_dict(manifest.ARTIFACT)
    lines = manifest.changes(before, manifest.build(data)) if before else []
    what = "; ".join(lines) if lines else "the run logged no data manifest, so what changed is unknown"
    if allow:
        print(f"  data {fingerprint} then, {data.fingerprint} now: {what}", flush=True)
        return True
    raise ValueError(f"the data changed since run {run_id} (fingerprint {fingerprint} then, {data.fingerprint} now): "
                     f"{what}. Restore them, or rerun with --allow-data-change to train on today's data")


def environment_differences(run_id: str, spec: ExperimentSpec, home: Path) -> list[str]:
    """How this machine and its packages differ from what the run recorded, precision included (what
    precision=auto resolves to here: `precision.used`)."""
    recorded = tracking.Run(run_id).logged_dict(environment.ARTIFACT)
    if recorded is None:
        return ["the run recorded no environment.json (made before blipexp logged one): nothing to compare"]
    now = environment.current(precision.used(spec, home))
    lines = environment.differences(recorded, now)
    return lines or ["the same as recorded (packages, Python, commit, checkout, device, threads)"]


def compared_metrics(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """Every metric either run logged, but those that time the run or measure the machine."""
    return sorted(key for key in before.keys() | after.keys()
                  if not key.startswith(MACHINE_METRICS) and "seconds" not in key)


def metric_differences(before: dict[str, float], after: dict[str, float]) -> dict[str, Pair]:
    """The compared metrics whose values differ at full precision (None: not logged on that side)."""
    pairs = {key: (before.get(key), after.get(key)) for key in compared_metrics(before, after)}
    return {key: pair for key, pair in pairs.items() if not _same(*pair)}


def _same(before: float | None, after: float | None) -> bool:
    return before == after or (before is not None and after is not None and math.isnan(before) and math.isnan(after))


def _within_noise(run_id: str, version, rerun_id: str, home: Path, data_changed: bool) -> str:
    """The paired comparison of the original model and the rerun's on the same test images, as one clause."""
    try:
        original = resolve(f"models:/{version.name}/{version.version}" if version else run_id, home)
        again = resolve(rerun_id, home)
        if data_changed:
            original = dataclasses.replace(original, fingerprint=None)  # scored on today's data, both of them
        comparison = assess.compare(original, again, home, "test", data=again, echo=False)
    except (ValueError, assess.EmptySplit) as exc:
        return f"not compared image for image ({exc})"
    difference = comparison.differences[comparison.metric]
    verdict = difference.verdict(evidence.ALPHA, a="the original", b="the rerun")
    if not difference.tested:  # too few images to tell noise from a change
        return verdict
    return ("beyond noise: " if difference.significant(evidence.ALPHA) else "within noise: ") + verdict


def _record(reproduction: Reproduction, rerun_run: tracking.Run, version) -> None:
    rerun_run.tags({RESULT_TAG: reproduction.result()})
    if version is not None and not reproduction.variant:  # a variant reproduces something else: the version's stay
        registry.tag_version(version, {REPRODUCED_BY_TAG: reproduction.run_id, RESULT_TAG: reproduction.result()})


def as_json(reproduction: Reproduction) -> dict[str, Any]:
    before, after = reproduction.weights
    return {"original_run_id": reproduction.original_run_id, "run_id": reproduction.run_id,
            "result": reproduction.result(), "exact": reproduction.exact, "data_changed": reproduction.data_changed,
            "variant": list(reproduction.variant), "weights": {"original": before, "rerun": after},
            "captions": {split: {"differ": n, "images": images}
                         for split, (n, images) in reproduction.captions.items()},
            "metrics_compared": reproduction.metrics,
            "differences": {key: {"original": a, "rerun": b} for key, (a, b) in reproduction.differences.items()}}


def cmd_rerun(args: argparse.Namespace) -> int:
    try:
        with interrupts.stop_at_safe_points():
            reproduction = rerun(args.model, home_of(args), tuple(args.overrides), args.allow_data_change,
                                 args.experiments)
    except KeyboardInterrupt as exc:
        signum = interrupts.signum_of(exc)
        print(f"\ninterrupted ({signal.Signals(signum).name}): the rerun's MLflow run, if it had started, ended "
              f"KILLED; `{shlex.join(['python', '-m', 'blipexp', *args.argv])}` reruns from the start", file=sys.stderr)
        return 128 + signum
    print(assess.to_json_text(as_json(reproduction)) if args.json else reproduction.describe())
    return 0
