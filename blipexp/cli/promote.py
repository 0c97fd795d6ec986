"""`promote`: an alias moved to a version on evidence from the test images (registry/promotion.py)."""
from __future__ import annotations

import argparse

from .. import tracking
from ..registry.promotion import promote, promotion_judge
from ..tracking import access
from ..tracking.comparisons import log_if_allowed
from .args import home_of


def cmd_promote(args: argparse.Namespace) -> int:
    tracking.configure(home_of(args))
    # an account that may not move the alias is refused before anything is compared, loaded or changed
    access.require_alias(tracking.current_uri(), args.name, args.alias)
    home = home_of(args)

    def record(comparison, candidate) -> str | None:  # the comparison's run, in the candidate's experiment
        return log_if_allowed(comparison, candidate, home, args.alpha)

    judge = promotion_judge(home, args.require, args.alpha, tuple(args.overrides), record=record)
    print(promote(args.name, args.version, alias=args.alias, force=args.force, judge=judge))
    return 0
