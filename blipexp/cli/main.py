"""Command line: list, show, run, models, promote, evaluate, compare, rerun, caption, export, ui, dashboard.

`python -m blipexp --help` or `blipexp --help`. The parser is here; each command's handler is `cmd_<command>` in
the module COMMANDS names, imported when that command runs: torch, MLflow and optuna load only for the commands
that use them."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

# No usage data leaves the machine from a blipexp command: MLflow's and the Hugging Face Hub's telemetry are off
# unless the user has set these variables. Set by the command line, not by importing blipexp as a library.
NO_TELEMETRY = (("MLFLOW_DISABLE_TELEMETRY", "true"), ("HF_HUB_DISABLE_TELEMETRY", "1"), ("DO_NOT_TRACK", "1"))
# command -> the module of this package whose cmd_<command> handles it
COMMANDS = {"list": "experiments", "show": "experiments", "run": "run", "models": "models", "promote": "promote",
            "evaluate": "judge", "compare": "judge", "rerun": "rerun", "caption": "caption", "export": "caption",
            "ui": "ui", "dashboard": "dashboard"}


def main(argv: list[str] | None = None) -> int:
    for name, value in NO_TELEMETRY:
        os.environ.setdefault(name, value)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # for the resume command after an interrupt
    try:
        return handler(args.command)(args) or 0
    except ValueError as exc:  # bad input: one clear line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a tracking server's 401 or 403 met mid-command, a diverging run: one line too
        from ..tracking.access import refusal  # imports MLflow: only once something failed
        from ..training.callbacks import NonFiniteMetric

        if isinstance(exc, NonFiniteMetric):  # what went non-finite, where, and the fix; its run ended FAILED
            print(f"\nerror: {exc}", file=sys.stderr)  # on a line of its own, after the progress bar
            return 1
        line = refusal(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2


def handler(command: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs `command`."""
    return getattr(importlib.import_module(f".{COMMANDS[command]}", __package__), f"cmd_{command}")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", help="folder for all run state (default: $BLIPEXP_HOME or ./mlruns)")
    common.add_argument("--experiments", help="folder of experiment files (default: ./experiments)")
    resolving = argparse.ArgumentParser(add_help=False)
    resolving.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="override a spec field, e.g. --set learning_rate=1e-5 (repeatable)")
    resolving.add_argument("--tiny", action="store_true",
                           help="offline profile: tiny BLIP from a config and the embedded pitch dataset")

    parser = argparse.ArgumentParser(prog="blipexp", description="Experiment-tracked fine-tuning of BLIP captioning models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", parents=[common], help="list the experiments")

    p = sub.add_parser("show", parents=[common, resolving], help="print an experiment's resolved spec")
    p.add_argument("name")

    p = sub.add_parser("run", parents=[common, resolving], help="train an experiment (a sweep if it has a search space)")
    p.add_argument("name")
    p.add_argument("--trials", type=int, help="total trials of a sweep (sets n_trials; resuming counts finished ones)")
    p.add_argument("--new", action="store_true",
                   help="start afresh instead of resuming an interrupted run or the sweep's study")
    p.add_argument("--storage", metavar="URL",
                   help="database for the sweep's study, shared by workers on several machines, e.g. "
                        "postgresql://user@host/optuna, a password in ~/.pgpass or the whole URL in $BLIPEXP_STORAGE "
                        "rather than on the command line (default: $BLIPEXP_STORAGE, else a file in --home)")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking server, e.g. https://mlflow-host:5000, the login in "
                        "$MLFLOW_TRACKING_USERNAME and $MLFLOW_TRACKING_PASSWORD (default: $MLFLOW_TRACKING_URI, "
                        "else a database in --home)")

    p = sub.add_parser("models", parents=[common], help="list registered models and versions with metrics and aliases")
    p.add_argument("name", nargs="?", help="one registered model (default: all)")

    p = sub.add_parser("promote", parents=[common],
                       help="point an alias (default: champion) at a model version, on evidence from the test images")
    p.add_argument("name")
    p.add_argument("--version", required=True)
    p.add_argument("--alias", default="champion")
    p.add_argument("--force", action="store_true",
                   help="promote even when the judgement refuses it: a worse or not-better candidate, or one that "
                        "cannot be compared with the alias's holder (recorded on the version)")
    p.add_argument("--require", choices=("not-worse", "better"), default="not-worse",
                   help="not-worse (default): refuse a candidate significantly worse than the holder; better: also "
                        "refuse one that is not significantly better. Both read the two-sided paired test at "
                        "--alpha (so each direction is in effect a one-sided test at alpha/2)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="significance level of the two-sided paired test (default 0.05)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="e.g. --set dataset=FOLDER: judge both versions on that set's test images")

    judging = argparse.ArgumentParser(add_help=False, parents=[resolving])
    judging.add_argument("--split", default="test", choices=("test", "validation", "train"),
                         help="the split of the data to score on (default: test)")
    judging.add_argument("--experiment", metavar="NAME",
                         help="the experiment whose data and settings score a model folder or base model")
    judging.add_argument("--json", action="store_true", help="print one JSON object instead of the report")

    p = sub.add_parser("evaluate", parents=[common, judging],
                       help="score a model on a split, every metric with its 95%% interval, and log an evaluation run")
    p.add_argument("model", help="models:/NAME/VERSION, models:/NAME@ALIAS, a run id, a save_pretrained folder, or "
                                 "an experiment name (its base model)")
    p.add_argument("--no-cache", action="store_true", help="caption again even when this evaluation is cached")

    p = sub.add_parser("compare", parents=[common, judging],
                       help="two models on the same images: per metric B - A, its 95%% interval and a paired p-value")
    p.add_argument("a", help="the baseline (as for evaluate)")
    p.add_argument("b", help="the challenger")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the verdict (default 0.05)")

    p = sub.add_parser("rerun", parents=[common],
                       help="train a version or run again from its logged spec, and say whether it reproduced")
    p.add_argument("model", help="models:/NAME/VERSION, models:/NAME@ALIAS or a run id")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change a field of the logged spec, e.g. --set precision=fp32 (repeatable)")
    p.add_argument("--allow-data-change", action="store_true",
                   help="train even when the data's fingerprint differs from the run's (what changed is printed)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object at the end")

    p = sub.add_parser("caption", parents=[common], help="caption images with a model, e.g. models:/NAME@champion")
    p.add_argument("model_uri")
    p.add_argument("images", nargs="+")

    p = sub.add_parser("export", parents=[common], help="write a registered model as a from_pretrained folder")
    p.add_argument("model_uri")
    p.add_argument("out_dir")
    p.add_argument("--push-to-hub", metavar="REPO", help="also push model and processor to this Hub repo")

    p = sub.add_parser("ui", parents=[common], help="start the MLflow UI on the project's store")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000)

    p = sub.add_parser("dashboard", parents=[common, resolving],
                       help="start optuna-dashboard on a sweep's study (each trial's objective per epoch: why pruned)")
    p.add_argument("name", help="the sweep experiment (with --tiny: its tiny study)")
    p.add_argument("--storage", metavar="URL", help="the study's database, as given to `run` (default: "
                                                    "$BLIPEXP_STORAGE, else the journal file in --home)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    return parser


if __name__ == "__main__":
    sys.exit(main())
