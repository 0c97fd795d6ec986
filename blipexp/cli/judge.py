"""Naming a model to evaluate, compare or rerun as the command line names it: `models:/NAME/VERSION` or
`models:/NAME@ALIAS` (a registered version: trained with the spec its run logged), a run id (its model folder in
this home), a folder saved with `save_pretrained` (with `--experiment NAME` for the data), or an experiment's name
(its untrained base model)."""
from __future__ import annotations

from pathlib import Path

from ..experiment.spec import ExperimentSpec
from ..registry.versions import version_target
from ..scoring.assess import Target, base_model_target, folder_target
from ..tracking.evaluations import RUN_ID, run_target


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
