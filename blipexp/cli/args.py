"""What the arguments several commands share resolve to: an experiment's spec (--set, --tiny) and the home."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..experiment import catalog
from ..experiment.spec import ExperimentSpec


def resolve_spec(args: argparse.Namespace) -> ExperimentSpec:
    """Defaults, then --set; with --tiny the tiny profile of that, with --set applied again on top."""
    spec = catalog.load(args.name, catalog.experiments_dir(args.experiments))
    spec = spec.with_overrides(args.overrides)
    if args.tiny:
        spec = spec.tiny().with_overrides(args.overrides)
    return spec


def home_of(args: argparse.Namespace) -> Path:
    """--home, else $BLIPEXP_HOME, else ./mlruns."""
    from ..tracking import resolve_home  # MLflow: only for the commands that use a store

    return resolve_home(args.home)
