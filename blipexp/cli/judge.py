"""`evaluate` and `compare` (scoring/assess.py), and naming the models they, `promote` and `rerun` judge as the
command line names them: `models:/NAME/VERSION` or
`models:/NAME@ALIAS` (a registered version: trained with the spec its run logged), a run id (its model folder in
this home), a folder saved with `save_pretrained` (with `--experiment NAME` for the data), or an experiment's name
(its untrained base model)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import tracking
from ..experiment import catalog
from ..experiment.spec import ExperimentSpec
from ..registry.versions import version_target
from ..scoring import assess
from ..scoring.assess import Target, base_model_target, folder_target
from ..scoring.evidence import check_alpha
from ..tracking.evaluations import RUN_ID, log_evaluation, run_target
from .args import home_of


def resolve(name: str, home: Path, experiment: ExperimentSpec | None = None) -> Target:
    """The model `name` names (see the module docstring). `experiment`: the spec a folder or base model is scored
    with (from --experiment); for a version or run, their own logged spec is used."""
    if name.startswith("models:/"):
        return version_target(name)
    if RUN_ID.fullmatch(name):
        return run_target(name, home)
    if Path(name).expanduser().is_dir():
        return folder_target(name, experiment)
    if experiment is not None:
        return base_model_target(name, experiment, home)
    raise ValueError(f"{name!r} names no model: pass models:/NAME/VERSION, models:/NAME@ALIAS, a run id, a folder "
                     "saved with save_pretrained, or an experiment name (its base model)")


def judged(args: argparse.Namespace, names: list[str]) -> tuple[Path, list[Target]]:
    """The home and the models named, resolved in its store; --experiment (with --tiny) names the data of a folder
    or base model, and a bare experiment name is one's base model."""
    home = home_of(args)
    tracking.configure(home)
    directory = catalog.experiments_dir(args.experiments)
    targets = []
    for name in names:
        experiment = args.experiment or (name if name in catalog.names(directory) else None)
        spec = None
        if experiment:
            spec = catalog.load(experiment, directory)
            spec = spec.tiny() if args.tiny else spec
        targets.append(resolve(name, home, spec))
    return home, targets


def cmd_evaluate(args: argparse.Namespace) -> int:
    home, (target,) = judged(args, [args.model])
    evaluation = assess.evaluate(target, home, args.split, tuple(args.overrides), use_cache=not args.no_cache,
                                 echo=not args.json)
    evaluation.run_id = log_evaluation(target, evaluation, home)
    print(assess.to_json_text(assess.as_json(evaluation)) if args.json else
          f"{assess.describe(evaluation)}\n  run         {evaluation.run_id}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    home, (a, b) = judged(args, [args.a, args.b])
    check_alpha(args.alpha)
    comparison = assess.compare(a, b, home, args.split, tuple(args.overrides), echo=not args.json)
    print(assess.to_json_text(comparison.as_json(args.alpha)) if args.json else comparison.describe(args.alpha))
    return 0
