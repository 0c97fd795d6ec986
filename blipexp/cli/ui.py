"""`ui`: the MLflow UI on the project's store (this process becomes `mlflow ui`)."""
from __future__ import annotations

import argparse
import os
import sys

from .. import tracking
from ..runtime import secrecy
from ..tracking.access import LOOPBACK
from .args import home_of


def cmd_ui(args: argparse.Namespace) -> int:
    if args.host not in LOOPBACK:
        print(f"warning: the MLflow UI has no authentication; binding {args.host} exposes every run and model "
              "to anyone who can reach this machine", file=sys.stderr, flush=True)
    home = home_of(args)
    uri = tracking.configure(home)  # a clear error now for an unusable home or store, not a server traceback later
    if uri.startswith(("http://", "https://")):
        print(f"runs go to the MLflow tracking server {secrecy.masked(uri)}: open it in a browser (it serves the UI)")
        return 0
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--default-artifact-root", (home / "artifacts").as_uri(),  # not ./mlartifacts of the cwd
               "--host", args.host, "--port", str(args.port), "--workers", "1"]
    # One person browsing: one worker, and no background job runner (GenAI judges) with its many processes.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    print(f"MLflow UI on {tracking.ui_link(f'http://{args.host}:{args.port}')}  (Ctrl-C stops it)\n"
          "  first visit in a browser: click 'Model training' at the top left once (MLflow opens in its GenAI "
          "view unless a link asks; the choice is kept), and close the MLflow Assistant panel (x, top right) that "
          "MLflow opens once per browser", flush=True)
    # this process becomes `mlflow ui`, which forwards SIGTERM and Ctrl-C to its server: a parent waiting on a child
    # would die of SIGTERM and leave the server holding the port
    os.execve(sys.executable, command, env)
