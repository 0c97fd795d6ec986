"""`blipexp rerun`: train a registered version (or a run) again from what its run logged, then say whether it
reproduced.

- The spec is the run's spec.json, never today's experiment file; the fields where that file now differs are
  printed. A version a sweep registered is its best trial's run: rerun trains that trial's parameters, with its seed,
  once.
- The data must have the fingerprint they had: otherwise the run's data manifest names what changed, and nothing
  trains without `--allow-data-change`.
- The environment the run recorded (environment.json) is compared with this machine's, every difference printed
  before training.
- After training: `reproduced exactly` when every logged final caption metric (validation and test) is equal to
  DIGITS decimals; otherwise each difference, and whether the two models differ beyond noise on the same test images
  (assess.compare). The new run is tagged blipexp.reproduces=<run id>; a version, reproduced_by and
  reproduction_result.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import assess, catalog, environment, evidence, precision, registry, tracking, trainer_args
from .data import load_data, manifest
from .metrics import METRIC_KEYS
from .spec import ExperimentSpec
from .train import train_trial

REPRODUCES_TAG = "blipexp.reproduces"
RESULT_TAG = "reproduction_result"
REPRODUCED_BY_TAG = "reproduced_by"
DIGITS = 4  # logged metrics equal to this many decimals count as reproduced
EXACT = "reproduced exactly"


@dataclass
class Reproduction:
    """What a rerun trained and how its final scores compare with the original's."""

    original_run_id: str
    run_id: str
    differences: dict[str, tuple[float, float]]  # metric -> (original, rerun), only those that differ
    data_changed: bool
    noise: str = ""  # the paired comparison's verdict when scores differ

    @property
    def exact(self) -> bool:
        return not self.differences

    def result(self) -> str:
        """One line, also the version's reproduction_result tag."""
        if self.exact:
            return EXACT + (" (on changed data)" if self.data_changed else "")
        worst = max(self.differences.items(), key=lambda item: abs(item[1][1] - item[1][0]))
        changed = " on changed data" if self.data_changed else ""
        line = (f"not exactly{changed}: {len(self.differences)} metric(s) differ, most {worst[0]} "
                f"{worst[1][0]:.4f} -> {worst[1][1]:.4f}")
        return f"{line}; {self.noise}" if self.noise else line

    def describe(self) -> str:
        rows = [f"  {key:<22} {before:.4f} -> {after:.4f}  ({after - before:+.4f})"
                for key, (before, after) in sorted(self.differences.items())]
        return "\n".join([f"rerun of run {self.original_run_id}: {self.result()}", *rows, f"  run  {self.run_id}"])


def rerun(name: str, home: Path, overrides: tuple[str, ...] = (), allow_data_change: bool = False,
          experiments: str | None = None, echo: bool = True) -> Reproduction:
    """Train `name` (models:/NAME/V, models:/NAME@ALIAS or a run id) again; see the module docstring."""
    tracking.configure(home)
    run_id, version = _original(name)
    spec = assess.logged_spec(run_id).with_overrides(overrides)
    say = print if echo else (lambda *args, **kwargs: None)
    say(f"blipexp rerun {name}: run {run_id}" + (f", version {version.version}" if version else ""), flush=True)
    for line in drift_from_file(spec, experiments, overrides):
        say(f"  {line}", flush=True)
    original = tracking.Run(run_id).read()
    data = load_data(spec, home)
    data_changed = check_data(run_id, original.data.tags.get("data_fingerprint"), data, allow_data_change)
    if data_changed:
        say("  data changed (--allow-data-change): the scores are not comparable image for image", flush=True)
    for line in environment_differences(run_id, spec, home):
        say(f"  environment: {line}", flush=True)
    tracking.use_experiment(spec.experiment_name, home)
    result = train_trial(spec, data, home, run_name=f"rerun of {original.info.run_name or run_id}",
                         extra_tags={REPRODUCES_TAG: run_id}, echo=echo)
    rerun_run = tracking.Run(result.run_id)
    reproduction = Reproduction(run_id, result.run_id, metric_differences(original.data.metrics,
                                                                          rerun_run.read().data.metrics), data_changed)
    if not reproduction.exact:
        reproduction.noise = _within_noise(run_id, version, result.run_id, home, data_changed)
    _record(reproduction, rerun_run, version)
    return reproduction


def _original(name: str):
    """(run id, registered version or None) of what `name` names."""
    if name.startswith("models:/"):
        target = assess.resolve(name, Path("."))  # a version: resolved in the store alone
        return target.run_id, target.version
    if not assess.RUN_ID.fullmatch(name):
        raise ValueError(f"{name!r} names no version or run: pass models:/NAME/VERSION, models:/NAME@ALIAS or a run "
                         "id (`python -m blipexp models` lists versions and their runs)")
    return name, None


def drift_from_file(spec: ExperimentSpec, experiments: str | None, overrides: tuple[str, ...]) -> list[str]:
    """Where today's experiment file differs from the logged spec: printed, never applied."""
    directory = catalog.experiments_dir(experiments)
    if not spec.name or spec.name not in catalog.names(directory):
        return [f"the experiment file {spec.name or '(unnamed)'}.py is gone: training from the logged spec alone"]
    loaded = catalog.load(spec.name, directory)
    # the log does not say whether --tiny was passed: the file's spec with or without it, whichever is closer
    changed, now = min((_changed(spec, candidate, overrides) for candidate in (loaded, loaded.tiny())),
                       key=lambda found: len(found[0]))
    logged = spec.to_dict()
    if not changed:
        return [f"experiments/{spec.name}.py gives the same spec today"]
    return [f"experiments/{spec.name}.py differs from the logged spec (edited since, or --set then); training the "
            "logged spec:"] + [
        f"  {key}: {logged[key]!r} logged, {now[key]!r} in the file now" for key in changed]


def _changed(spec: ExperimentSpec, today: ExperimentSpec, overrides: tuple[str, ...]):
    """The fields where `today` (an experiment file's spec) differs from the logged `spec`, and today's values."""
    today = today.with_overrides(overrides)
    if today.search_space():  # a sweep's fields searched are the trial's values, not the file's
        today = today.replace(**{key: _value(spec, key) for key in today.search_space()})
    if not today.mlflow_experiment and spec.mlflow_experiment == today.experiment_name:
        today = today.replace(mlflow_experiment=spec.mlflow_experiment)  # the logged spec names it explicitly
    logged, now = spec.to_dict(), today.to_dict()
    return [key for key in logged if key in now and logged[key] != now[key]], now


def _value(spec: ExperimentSpec, key: str) -> Any:
    """A field's value, or a trainer entry's for a `trainer.<name>` key."""
    if key.startswith(trainer_args.PREFIX):
        return spec.trainer[key[len(trainer_args.PREFIX):]]
    return getattr(spec, key)


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


def metric_differences(before: dict[str, float], after: dict[str, float]) -> dict[str, tuple[float, float]]:
    """The final caption metrics (best_val_*, test_*) whose values differ at DIGITS decimals."""
    keys = [f"{prefix}_{metric}" for prefix in ("best_val", "test") for metric in METRIC_KEYS]
    return {key: (before[key], after[key]) for key in keys
            if key in before and key in after and round(before[key], DIGITS) != round(after[key], DIGITS)}


def _within_noise(run_id: str, version, rerun_id: str, home: Path, data_changed: bool) -> str:
    """The paired comparison of the original model and the rerun's on the same test images, as one clause."""
    try:
        original = assess.resolve(f"models:/{version.name}/{version.version}" if version else run_id, home)
        again = assess.resolve(rerun_id, home)
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
    if version is not None:
        registry.tag_version(version, {REPRODUCED_BY_TAG: reproduction.run_id, RESULT_TAG: reproduction.result()})


def as_json(reproduction: Reproduction) -> dict[str, Any]:
    return {"original_run_id": reproduction.original_run_id, "run_id": reproduction.run_id,
            "result": reproduction.result(), "exact": reproduction.exact, "data_changed": reproduction.data_changed,
            "differences": {key: {"original": a, "rerun": b} for key, (a, b) in reproduction.differences.items()}}
