"""`dashboard`: optuna-dashboard on a sweep's study (sweep/dashboard.py), each trial's objective per epoch."""
from __future__ import annotations

import argparse
import sys

from ..sweep import dashboard
from ..tracking.access import LOOPBACK
from .args import home_of, resolve_spec


def cmd_dashboard(args: argparse.Namespace) -> int:
    spec = resolve_spec(args)
    if not spec.search_space():
        raise ValueError(f"{spec.name} is a single run, not a sweep: it has no study to show (MLflow has its run: "
                         "python -m blipexp ui)")
    storage, name, study_id = dashboard.find_study(spec, home_of(args), args.storage)
    if args.host not in LOOPBACK:
        print(f"warning: optuna-dashboard has no authentication; binding {args.host} exposes the study to anyone "
              "who can reach this machine", file=sys.stderr, flush=True)
    print(f"optuna-dashboard on http://{args.host}:{args.port}/dashboard/studies/{study_id}  (study {name}; "
          "Ctrl-C stops it)", flush=True)
    dashboard.serve(storage, args.host, args.port)
    return 0
