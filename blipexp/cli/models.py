"""`models`: the registered models' versions with their metrics and aliases."""
from __future__ import annotations

import argparse

from .. import tracking
from ..registry.versions import format_models, list_models
from .args import home_of


def cmd_models(args: argparse.Namespace) -> int:
    tracking.configure(home_of(args))
    print(format_models(list_models(args.name)))
    return 0
