"""`promote`: an alias moved to a version on evidence from the test images (registry/promotion.py)."""
from __future__ import annotations

import argparse

from .. import tracking
from ..registry.promotion import promote, promotion_judge
from ..tracking import access
from .args import home_of


def cmd_promote(args: argparse.Namespace) -> int:
    tracking.configure(home_of(args))
    # an account that may not move the alias is refused before anything is compared, loaded or changed
    access.require_alias(tracking.current_uri(), args.name, args.alias)
    judge = promotion_judge(home_of(args), args.require, args.alpha, tuple(args.overrides))
    print(promote(args.name, args.version, alias=args.alias, force=args.force, judge=judge))
    return 0
