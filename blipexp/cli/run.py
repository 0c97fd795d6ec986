"""`blipexp run`: resolve where state goes, load the data once, then train once or sweep, and summarise; Ctrl-C and
SIGTERM stop it at a safe point with the command that resumes it."""
from __future__ import annotations

import argparse
import signal
import socket
import sys
from pathlib import Path

from .. import tracking
from ..data import CaptionData, load_data
from ..experiment.spec import ExperimentSpec
from ..model import generation
from ..runtime import distributed, interrupts, locks
from ..scoring.evaluation import intervals_note
from ..tracking import access
from ..tracking.scores import LoggedScores
from ..training import resume
from ..training.train import TrialResult, train_trial
from .args import home_of, resolve_spec
from .resuming import interrupted_message, resume_command


def cmd_run(args: argparse.Namespace) -> int:
    spec = resolve_spec(args)
    if args.trials is not None:
        spec = spec.replace(n_trials=args.trials)
    try:
        with interrupts.stop_at_safe_points():  # Ctrl-C and SIGTERM stop at the next safe point
            return run_experiment(spec, home=home_of(args), new_study=args.new, storage=args.storage,
                                  tracking_uri=args.tracking_uri)
    except KeyboardInterrupt as exc:
        signum = interrupts.signum_of(exc)
        print("\n" + interrupted_message(spec, signal.Signals(signum).name, getattr(exc, "killed_run_id", None),
                                         resume_command(args.argv)), file=sys.stderr)
        return 128 + signum


def run_experiment(spec: ExperimentSpec, home: Path, new_study: bool = False, *, storage: str | None = None,
                   tracking_uri: str | None = None) -> int:
    """Train once, or sweep when the spec declares a search space. `new_study`: a sweep's study, or a single
    run, starts afresh instead of resuming an interrupted one.

    `storage` (else $BLIPEXP_STORAGE) is a database URL for the sweep's study, shared by workers on several
    machines; `tracking_uri` (else $MLFLOW_TRACKING_URI) an MLflow tracking server they all log to."""
    is_main_process = distributed.is_main_process()
    if spec.search_space() and distributed.world_size() > 1:
        raise ValueError("a sweep cannot run under `accelerate launch` (its trials would differ per process): run "
                         "one sweep worker per GPU instead (README: Scaling out), or launch a single experiment")
    with locks.hold(home, "mlflow-store"):  # parallel workers: one creates the store's tables, the others wait
        uri = tracking.configure(home, tracking_uri)
        access.require_run(uri, spec.experiment_name, spec.registered_model)  # a viewer stops here, not at the end
        tracking.use_experiment(spec.experiment_name, home)
    study_storage = _open_storage(spec, home, storage)  # a bad URL fails here, before any data or training
    if is_main_process:
        print(f"blipexp run {spec.name} ({spec.profile} profile)  model={spec.model}", flush=True)
    with distributed.main_process_first():  # generated data is written once, not raced by every rank
        data = load_data(spec, home)
    if is_main_process:
        print(describe_data(data), flush=True)
    if spec.search_space():
        return _sweep(spec, data, home, new_study, study_storage)
    # an interrupted run of this spec and data is continued (`--new`: a new run); every rank resumes the same one
    resumable = distributed.from_main(resume.plan(spec, data.fingerprint, home, new_study) if is_main_process else None)
    result = train_trial(spec, data, home, resumable=resumable,
                         register=lambda result: _register_once(spec, data, result))
    if not is_main_process:
        return 0  # this rank trained; the main process registers and reports
    print(summary(spec, result, home))
    print(next_steps(spec, result.version))
    return 0


def _register_once(spec: ExperimentSpec, data: CaptionData, result: TrialResult):
    """A single run's model, registered inside its run (a stop while logging it leaves the run resumable); a
    resumed run stopped after registering keeps the version it has."""
    from ..registry.versions import version_of_run

    return (version_of_run(spec.registered_model, result.run_id)
            or register_trial_model(spec, data, result.model_dir, result.run_id, {}))


# Spec fields that define a registered model; a version is tagged with these and with every field its sweep searched.
MODEL_FIELDS = ("model", "model_revision", "freeze_vision_encoder", "precision", "dataset", "dataset_revision",
                "dataset_split", "max_caption_tokens", "learning_rate", "epochs", "seed", *generation.FIELDS)
LORA_FIELDS = ("adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_targets")  # tagged on a LoRA model's versions


def register_trial_model(spec: ExperimentSpec, data: CaptionData, model_dir: Path, run_id: str,
                         extra_tags: dict[str, str]):
    """Tag a trained trial's model with how it was made and what its run measured (objective, validation and test
    metrics with their intervals, the worst test captions in its model card), then log and register it
    (registry.log_and_register) as a new version of spec.registered_model.

    `spec` holds the values the model was trained with (for a sweep: the best trial's)."""
    from ..model.modeling import adapter_dir
    from ..registry import model_card
    from ..registry.register import log_and_register
    from ..runtime import environment
    from ..scoring import eval_cache
    from ..scoring.evaluation import SplitScores

    run = tracking.Run(run_id).read()
    validation, test = LoggedScores.of(run, "validation"), LoggedScores.of(run, "test")
    objective = validation.metrics[spec.objective_metric]
    key = spec.objective_metric
    tags = {
        "objective": repr(objective),
        "objective_metric": key,
        "objective_direction": spec.direction,
        **{tag: _tag_value(spec.value(tag)) for tag in (*MODEL_FIELDS, *spec.search_space())},
        "precision": run.data.params.get("precision_used", spec.precision),  # what it trained in, never "auto"
        **{tag: _tag_value(getattr(spec, tag)) for tag in (LORA_FIELDS if spec.adapter == "lora" else ())},
        "data_fingerprint": data.fingerprint,
        "profile": spec.profile,
        "experiment": spec.name,
        "weights_digest": eval_cache.weights_digest(model_dir),
        **{f"val_{k}": f"{v:.6g}" for k, v in validation.metrics.items()},
        **({f"test_{key}": f"{test.metrics[key]:.6g}"} if key in test.metrics else {}),
        **({f"test_{key}_ci_low": f"{test.intervals[key].low:.6g}",
            f"test_{key}_ci_high": f"{test.intervals[key].high:.6g}",
            "test_signature": test.signature} if key in test.intervals else {}),
        **extra_tags,
    }
    description = (f"{spec.name}: val {key} {objective:.4f}. {spec.hypothesis}")
    settings = generation.settings(spec)
    worst = []
    if test.metrics:
        table = tracking.Run(run_id).table_columns("per_image/test.json")
        worst = SplitScores.from_table(table, "test", test.metrics, idf="").worst(key)
    recorded = tracking.Run(run_id).logged_dict(environment.ARTIFACT)
    commit = recorded["blipexp"]["commit"] if recorded else environment.git_commit()
    card = model_card.render(spec, data, validation, test, settings, commit, worst, recorded, run_id)
    return log_and_register(model_dir, registered_model=spec.registered_model, run_id=run_id, tags=tags,
                            description=description,
                            generation=settings,
                            adapter_dir=adapter_dir(model_dir) if spec.adapter == "lora" else None,
                            card=card)


def _tag_value(value: object) -> str:
    """A spec value as a tag: a string as it is, a number or bool as Python writes it (repr keeps a float's digits)."""
    return value if isinstance(value, str) else repr(value)


def next_steps(spec: ExperimentSpec, version) -> str:
    name = spec.registered_model
    return "\n".join([
        f"  registered  {name} version {version.version}",
        f"  promote     python -m blipexp promote {name} --version {version.version} --alias champion",
        f"  caption     python -m blipexp caption models:/{name}@champion IMAGE...",
    ])


def _open_storage(spec: ExperimentSpec, home: Path, url: str | None):
    """The sweep's Optuna storage (None for a single run): the database at `url` or $BLIPEXP_STORAGE, else the
    journal file in home."""
    if not spec.search_space():
        return None
    from .. import sweep

    return sweep.optuna_storage(home, sweep.storage_url(url))


def _sweep(spec: ExperimentSpec, data: CaptionData, home: Path, new_study: bool, storage) -> int:
    from .. import sweep
    from ..sweep import choose

    result = sweep.run_sweep(spec, data, home, new=new_study, storage=storage)
    print("\n" + sweep.summary_table(result.study))
    if result.best_trial is None:
        print("\nno trial completed: nothing to register. Re-run the same command to resume.")
        return 1
    best = result.best_trial
    for line in sweep.range_edge_advice(best):
        print(line)
    separated = sweep.separation(result.study, spec)
    if separated is not None:
        confirming = spec.confirm_top >= 2  # the confirmation chooses (validation: then confirm_seeds >= 2)
        print(sweep.separation_line(*separated, confirming))
        sweep.log_separation(tracking.Run(result.parent_run_id), *separated, confirming)
    if sweep.counted(result.study) < spec.n_trials:
        print(f"\nthe sweep has not reached its {spec.n_trials} trials (some failed): re-run the same command to "
              "finish it; the best model is registered when it does.")
        return 1
    version = _choose_and_register(spec, data, home, result, separated)
    if version is None:
        return 0
    line = tracking.Run(result.parent_run_id).read().data.tags.get(choose.CHOICE_TAG)
    print(f"\n{line or f'best: trial {best.number}  {spec.objective_metric} {best.value:.4f}'}")
    print(f"  sweep run   {result.parent_run_id}  (MLflow experiment {spec.experiment_name!r})")
    print(next_steps(spec, version))
    print(f"  browse      {tracking.ui_command(home, spec.experiment_name)}")
    return 0


def _choose_and_register(spec: ExperimentSpec, data: CaptionData, home: Path, result, separated):
    """Confirm the confirm_top best configurations with fresh seeds (each run trained by one worker, outside the
    lock), then, under the study lock, choose (sweep/choose.py) and register the chosen trial's model, once: the
    first worker to find every confirmation run done registers, the others find its version. None when this worker
    leaves it to another (a confirmation run still trains, or the chosen model is on another machine)."""
    from ..sweep import choose, confirm, keep_models, study_lock, top_trials

    study = result.study
    confirmed = top_trials(study, spec.confirm_top) if spec.confirm_seeds else []
    planned = confirm.plan(spec, confirmed)
    if planned and _sweep_version(spec, result.parent_run_id) is None:  # one version per sweep: none is confirmed again
        confirm.train_units(spec, data, home, study, confirmed, result.parent_run_id)
    with study_lock(study, home):
        version = _sweep_version(spec, result.parent_run_id)
        if version is not None:
            return version
        runs = confirm.outcomes(study, planned)
        if runs is None:
            print("  confirm: the worker that finishes the last confirmation run chooses and registers")
            return None
        choice = choose.choose(spec, study, confirmed, runs, separated)
        chosen, folder = choice.chosen, Path(choice.chosen.user_attrs["model_dir"])
        host = chosen.user_attrs.get("host", "another machine")
        if not folder.is_dir() and host != socket.gethostname():
            print(f"\nchosen: trial {chosen.number}, trained on {host}: its model folder {folder} is not on this "
                  "machine. The worker there registers it; if it has stopped, run this command there.")
            return None
        choice.log(tracking.Run(result.parent_run_id))  # before registering: the version marks the choice as done
        version = register_trial_model(spec.replace(**chosen.params), data, folder, chosen.user_attrs["mlflow_run_id"],
                                       {"sweep_run_id": result.parent_run_id, "optuna_trial": str(chosen.number),
                                        **choice.version_tags(spec)})
        keep_models(study, {chosen.number})  # the other confirmed trials' folders: not registered
    for name in ("objective", f"test_{spec.objective_metric}"):
        if name in choice.spread:
            print(f"  {name:<11} {choice.spread[name].text()} (trial {chosen.number}'s parameters)")
    return version


def _sweep_version(spec: ExperimentSpec, sweep_run_id: str):
    from ..registry.versions import version_tagged

    return version_tagged(spec.registered_model, "sweep_run_id", sweep_run_id)


def describe_data(data: CaptionData) -> str:
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(data.skipped.items())) or "none"
    lines = [f"data: {len(data.train)} train / {len(data.validation)} validation / {len(data.test)} test images "
             f"from {data.source}", f"      skipped: {skipped} (of {data.total})"]
    lines += [f"      warning: {w}" for w in data.warnings]
    return "\n".join(lines)


def summary(spec: ExperimentSpec, result: TrialResult, home: Path) -> str:
    """What a single run found: the objective, the served model's validation and test metrics with their 95%
    intervals (and how they were made), the worst test captions, where the run and the model are."""
    key = spec.objective_metric
    lines = [
        "",
        f"done: {key} {result.objective:.4f} at epoch {result.best_epoch} "
        f"(untrained: {result.untrained.get(key, float('nan')):.4f})",
    ]
    run = tracking.Run(result.run_id).read()
    for split in ("validation", "test"):
        scores, scored = LoggedScores.of(run, split), getattr(result, split)
        if scores.metrics:
            lines.append(f"  {split:<11} {scores.line()}")
        if scores.metrics and scored is not None:
            lines.append(f"  {'':<11} {intervals_note(scores.intervals, scores.signature, len(scored.keys))}")
    if result.test is not None:
        lines.append(f"  worst test captions by {key if key in result.test.images.means else 'cider'}:")
        lines += [f"    {score:.3f}  {image}: {caption!r} (references: {' | '.join(refs)})"
                  for image, caption, refs, score in result.test.worst(key)]
    lines += [
        f"  run id      {result.run_id}  (MLflow experiment {spec.experiment_name!r})",
        f"  model       {result.model_dir}",
        f"  browse      {tracking.ui_command(home, spec.experiment_name)}",
    ]
    return "\n".join(lines)
