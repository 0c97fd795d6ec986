"""What an interrupted `run` says: how it ended, and the command that carries on (its passwords left out)."""
from __future__ import annotations

import shlex

from ..experiment.spec import ExperimentSpec


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
    from ..runtime.secrecy import password_masked
    from ..sweep.study import STORAGE_ENV
    from ..tracking import TRACKING_URI_ENV

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
