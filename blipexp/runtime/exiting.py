"""How a blipexp command ends its process: everything Python does at exit, but not the teardown of every module.

Once torch, transformers and MLflow are imported, the interpreter's last step (clearing thousands of modules and
collecting what they held) takes about 2 s on a 2-core machine (1.8 s after the imports alone, 2.0-2.4 s after a
sweep; 0.1 s with exit_now), after the command's last line is printed and nothing is left to write. `exit_now`
does what exit does before that step, in the same order, then ends the process: non-daemon threads are joined
(thread pools finish their work), atexit handlers run (logging, MLflow's queued writes, temporary folders,
multiprocessing's children, coverage.py's data), stdout and stderr are flushed. (coverage.py measures a command
started by a measured process, as `coverage run -m pytest` does; `coverage run -m blipexp` saves nothing, as its
program never returns to it.)
"""
from __future__ import annotations

import atexit
import os
import sys
import threading


def exit_now(code: int | None) -> None:
    """End this process with `code` (None: 0) as `sys.exit` would at the end of a program, minus module teardown."""
    _join_threads_and_run_exit_handlers()
    # coverage.py saves its data in an atexit handler, just run: no process can report the lines below as run
    for stream in (sys.stdout, sys.stderr):  # pragma: no cover
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written to it anyway
            pass
    os._exit(code or 0)  # pragma: no cover


def _join_threads_and_run_exit_handlers() -> None:
    """What Python's finalization runs first (private: test_private_apis.py checks both still do it)."""
    threading._shutdown()  # non-daemon threads joined, thread pools told to finish (threading._register_atexit)
    atexit._run_exitfuncs()
