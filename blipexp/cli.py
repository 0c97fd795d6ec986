"""Command line: list, show, run, models, promote, evaluate, compare, rerun, caption, export, ui, dashboard.

`python -m blipexp --help` or `blipexp --help`."""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import signal
import sys
from pathlib import Path

from . import catalog, interrupts
from .spec import ExperimentSpec

# No usage data leaves the machine from a blipexp command: MLflow's and the Hugging Face Hub's telemetry are off
# unless the user has set these variables. Set by the command line, not by importing blipexp as a library.
NO_TELEMETRY = (("MLFLOW_DISABLE_TELEMETRY", "true"), ("HF_HUB_DISABLE_TELEMETRY", "1"), ("DO_NOT_TRACK", "1"))


def main(argv: list[str] | None = None) -> int:
    for name, value in NO_TELEMETRY:
        os.environ.setdefault(name, value)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # for the resume command after an interrupt
    try:
        return args.handler(args) or 0
    except ValueError as exc:  # bad input: one clear line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a tracking server's 401 or 403 met mid-command, a diverging run: one line too
        from .access import refusal  # imports MLflow: only once something failed
        from .callbacks import NonFiniteMetric

        if isinstance(exc, NonFiniteMetric):  # what went non-finite, where, and the fix; its run ended FAILED
            print(f"\nerror: {exc}", file=sys.stderr)  # on a line of its own, after the progress bar
            return 1
        line = refusal(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2


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
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("show", parents=[common, resolving], help="print an experiment's resolved spec")
    p.add_argument("name")
    p.set_defaults(handler=cmd_show)

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
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("models", parents=[common], help="list registered models and versions with metrics and aliases")
    p.add_argument("name", nargs="?", help="one registered model (default: all)")
    p.set_defaults(handler=cmd_models)

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
    p.set_defaults(handler=cmd_promote)

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
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("compare", parents=[common, judging],
                       help="two models on the same images: per metric B - A, its 95%% interval and a paired p-value")
    p.add_argument("a", help="the baseline (as for evaluate)")
    p.add_argument("b", help="the challenger")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the verdict (default 0.05)")
    p.add_argument("--html", metavar="FILE",
                   help="also write the side-by-side table (pictures, references, both captions, per-image scores) "
                        "as one self-contained HTML page")
    p.set_defaults(handler=cmd_compare)

    p = sub.add_parser("rerun", parents=[common],
                       help="train a version or run again from its logged spec, and say whether it reproduced")
    p.add_argument("model", help="models:/NAME/VERSION, models:/NAME@ALIAS or a run id")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change a field of the logged spec, e.g. --set precision=fp32 (repeatable)")
    p.add_argument("--allow-data-change", action="store_true",
                   help="train even when the data's fingerprint differs from the run's (what changed is printed)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object at the end")
    p.set_defaults(handler=cmd_rerun)

    p = sub.add_parser("caption", parents=[common], help="caption images with a model, e.g. models:/NAME@champion")
    p.add_argument("model_uri")
    p.add_argument("images", nargs="+")
    p.set_defaults(handler=cmd_caption)

    p = sub.add_parser("export", parents=[common], help="write a registered model as a from_pretrained folder")
    p.add_argument("model_uri")
    p.add_argument("out_dir")
    p.add_argument("--push-to-hub", metavar="REPO", help="also push model and processor to this Hub repo")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("ui", parents=[common], help="start the MLflow UI on the project's store")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(handler=cmd_ui)

    p = sub.add_parser("dashboard", parents=[common, resolving],
                       help="start optuna-dashboard on a sweep's study (each trial's objective per epoch: why pruned)")
    p.add_argument("name", help="the sweep experiment (with --tiny: its tiny study)")
    p.add_argument("--storage", metavar="URL", help="the study's database, as given to `run` (default: "
                                                    "$BLIPEXP_STORAGE, else the journal file in --home)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(handler=cmd_dashboard)
    return parser


def resolve_spec(args: argparse.Namespace) -> ExperimentSpec:
    """Defaults, then --set; with --tiny the tiny profile of that, with --set applied again on top."""
    spec = catalog.load(args.name, catalog.experiments_dir(args.experiments))
    spec = spec.with_overrides(args.overrides)
    if args.tiny:
        spec = spec.tiny().with_overrides(args.overrides)
    return spec


def cmd_list(args: argparse.Namespace) -> int:
    directory = catalog.experiments_dir(args.experiments)
    found = catalog.names(directory)
    if not found:
        print(f"no experiments in {directory}")
        return 0
    width = max(map(len, found))
    for name in found:
        try:
            spec = catalog.load(name, directory)
            kind = "sweep" if spec.search_space() else "single"
            print(f"{name:<{width}}  [{kind}] model={spec.model} dataset={spec.dataset}\n{'':<{width}}  {spec.hypothesis}")
        except ValueError as exc:
            print(f"{name:<{width}}  BROKEN: {exc}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    spec = resolve_spec(args)
    defaults = type(spec)()
    print(f"{spec.name}  ({type(spec).__name__}{', tiny profile' if args.tiny else ''})")
    print(f"hypothesis: {spec.hypothesis}\n")
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        mark = "*" if value != getattr(defaults, f.name) else " "
        print(f"{mark} {f.name:<28} {value!r:<40} {f.metadata.get('help', '')}")
    space = spec.search_space()
    if space:
        print("\nsearch space:")
        for key, dim in space.items():
            print(f"  {key:<26} {dim}")
    print("\n* differs from the experiment's default")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import run_experiment  # heavy imports (torch, transformers) only when training

    spec = resolve_spec(args)
    if args.trials is not None:
        spec = spec.replace(n_trials=args.trials)
    try:
        with interrupts.stop_at_safe_points():  # Ctrl-C and SIGTERM stop at the next safe point
            return run_experiment(spec, home=_home(args), new_study=args.new, storage=args.storage,
                                  tracking_uri=args.tracking_uri)
    except KeyboardInterrupt as exc:
        signum = interrupts.signum_of(exc)
        print("\n" + interrupted_message(spec, signal.Signals(signum).name, getattr(exc, "killed_run_id", None),
                                         resume_command(args.argv)), file=sys.stderr)
        return 128 + signum


def interrupted_message(spec: ExperimentSpec, signame: str, run_id: str | None, again: str) -> str:
    """One line: how the interrupted command ended and the command that carries on."""
    if spec.search_space():
        return (f"interrupted ({signame}): re-run `{again}` to resume "
                "(a sweep keeps its finished trials and runs the interrupted one again)")
    if run_id is None:
        return f"interrupted ({signame}) while no MLflow run was training: re-run `{again}` to train"
    return (f"interrupted ({signame}): MLflow run {run_id} ended KILLED; re-run `{again}` to resume it from its last "
            "epoch checkpoint (--new starts afresh)")


def resume_command(argv: list[str]) -> str:
    """The same command without --new, which would start afresh instead of resuming.

    A --storage or --tracking-uri URL with a password is not repeated (on screen, in the shell history): the
    command reads it from its environment variable instead, and a comment says to export it (password masked)."""
    from .secrecy import password_masked
    from .sweep.study import STORAGE_ENV
    from .tracking import TRACKING_URI_ENV

    variables = {"--storage": STORAGE_ENV, "--tracking-uri": TRACKING_URI_ENV}
    args, hidden, words = [], {}, iter(argv)
    for arg in words:
        flag, inline, value = arg.partition("=")
        if flag in variables:
            url = value if inline else next(words, "")
            masked = password_masked(url)
            if masked:
                hidden[variables[flag]] = masked
            else:
                args += [flag, url]
        elif arg != "--new":
            args.append(arg)
    command = shlex.join(["python", "-m", "blipexp", *args])
    if hidden:
        exports = " ".join(f"{name}={shlex.quote(url)}" for name, url in hidden.items())
        command += f"  # first: export {exports} with the real password for ***"
    return command


def _registry(args: argparse.Namespace):
    from . import registry, tracking

    tracking.configure(_home(args))
    return registry


def _serving(args: argparse.Namespace):
    from . import serving, tracking

    tracking.configure(_home(args))
    return serving


def cmd_models(args: argparse.Namespace) -> int:
    registry = _registry(args)
    print(registry.format_models(registry.list_models(args.name)))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    registry = _registry(args)
    from . import assess, side_by_side

    _check_may_promote(args)
    home = _home(args)

    def record(comparison, candidate) -> str | None:  # the comparison's run, in the candidate's experiment
        return side_by_side.log_if_allowed(comparison, candidate, home, args.alpha)

    judge = assess.promotion_judge(home, args.require, args.alpha, tuple(args.overrides), record=record)
    print(registry.promote(args.name, args.version, alias=args.alias, force=args.force, judge=judge))
    return 0


def _judged(args: argparse.Namespace, names: list[str]):
    """The models named, resolved in the configured store; --experiment (with --tiny) names the data of a folder or
    base model, and a bare experiment name is one's base model."""
    from . import assess, tracking

    home = _home(args)
    tracking.configure(home)
    directory = catalog.experiments_dir(args.experiments)
    targets = []
    for name in names:
        experiment = args.experiment or (name if name in catalog.names(directory) else None)
        spec = None
        if experiment:
            spec = catalog.load(experiment, directory)
            spec = spec.tiny() if args.tiny else spec
        targets.append(assess.resolve(name, home, spec))
    return assess, home, targets


def cmd_evaluate(args: argparse.Namespace) -> int:
    assess, home, (target,) = _judged(args, [args.model])
    evaluation = assess.evaluate(target, home, args.split, tuple(args.overrides), use_cache=not args.no_cache,
                                 echo=not args.json)
    evaluation.run_id = assess.log_evaluation(target, evaluation, home)
    print(assess.to_json_text(assess.as_json(evaluation)) if args.json else
          f"{assess.describe(evaluation)}\n  run         {evaluation.run_id}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from . import side_by_side
    from .evidence import check_alpha

    assess, home, (a, b) = _judged(args, [args.a, args.b])
    check_alpha(args.alpha)
    comparison = assess.compare(a, b, home, args.split, tuple(args.overrides), echo=not args.json)
    page = side_by_side.write_html(comparison, Path(args.html), args.alpha) if args.html else None
    kept = f" ({page} holds it)" if page else " (--html FILE keeps it as a page)"
    run_id = side_by_side.log_if_allowed(comparison, b, home, args.alpha, kept)
    if args.json:
        print(assess.to_json_text({**comparison.as_json(args.alpha), "run_id": run_id,
                                   "html": str(page) if page else None}))
    else:
        print(comparison.describe(args.alpha) + (f"\n  run         {run_id}" if run_id else "") +
              (f"\n  page        {page}" if page else ""))
    return 0


def _check_may_promote(args: argparse.Namespace) -> None:
    """Refuse an account that may not move the alias before anything is compared, loaded or changed."""
    from . import access, tracking

    access.require_alias(tracking.current_uri(), args.name, args.alias)


def cmd_rerun(args: argparse.Namespace) -> int:
    from . import assess, rerun

    try:
        with interrupts.stop_at_safe_points():
            reproduction = rerun.rerun(args.model, _home(args), tuple(args.overrides), args.allow_data_change,
                                       args.experiments)
    except KeyboardInterrupt as exc:
        signum = interrupts.signum_of(exc)
        print(f"\ninterrupted ({signal.Signals(signum).name}): the rerun's MLflow run, if it had started, ended "
              f"KILLED; `{shlex.join(['python', '-m', 'blipexp', *args.argv])}` reruns from the start", file=sys.stderr)
        return 128 + signum
    print(assess.to_json_text(rerun.as_json(reproduction)) if args.json else reproduction.describe())
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    for image, text in zip(args.images, _serving(args).caption(args.model_uri, args.images)):
        print(f"{image}\t{text}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    out = _serving(args).export(args.model_uri, Path(args.out_dir), push_to_hub=args.push_to_hub)
    print(f"exported to {out}: BlipForConditionalGeneration.from_pretrained({str(out)!r}) loads it")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from . import secrecy, tracking
    from .access import LOOPBACK

    if args.host not in LOOPBACK:
        print(f"warning: the MLflow UI has no authentication; binding {args.host} exposes every run and model "
              "to anyone who can reach this machine", file=sys.stderr, flush=True)
    home = _home(args)
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



def cmd_dashboard(args: argparse.Namespace) -> int:
    """optuna-dashboard in this process, on the storage object `run` uses (for a journal file: its lock too)."""
    import optuna
    import optuna_dashboard

    from .access import LOOPBACK
    from .secrecy import masked
    from .sweep import optuna_storage, storage_url, study_name
    from .sweep.study import JOURNAL

    spec = resolve_spec(args)
    if not spec.search_space():
        raise ValueError(f"{spec.name} is a single run, not a sweep: it has no study to show (MLflow has its run: "
                         "python -m blipexp ui)")
    url = storage_url(args.storage)
    home = _home(args)
    storage = optuna_storage(home, url)
    name = study_name(spec)
    if name not in optuna.get_all_study_names(storage=storage):
        where = masked(url) if url else str(home / JOURNAL)
        raise ValueError(f"no study {name!r} in {where}: run the sweep first (python -m blipexp run {spec.name}"
                         f"{' --tiny' if spec.is_tiny else ''}), or pass the --home / --storage it used")
    if args.host not in LOOPBACK:
        print(f"warning: optuna-dashboard has no authentication; binding {args.host} exposes the study to anyone "
              "who can reach this machine", file=sys.stderr, flush=True)
    study_id = storage.get_study_id_from_name(name)
    print(f"optuna-dashboard on http://{args.host}:{args.port}/dashboard/studies/{study_id}  (study {name}; "
          "Ctrl-C stops it)", flush=True)
    try:
        optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    except KeyboardInterrupt:
        pass
    return 0


def _home(args: argparse.Namespace) -> Path:
    from .tracking import resolve_home

    return resolve_home(args.home)


if __name__ == "__main__":
    sys.exit(main())
