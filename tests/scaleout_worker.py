"""Run `python -m blipexp ...` as if on the machine HOST: a sweep worker for tests/test_scaleout.py.

    python tests/scaleout_worker.py HOST blipexp-args...

Workers on one test machine would see each other's processes (host + pid) and fail a killed worker's trial
at once; with a host name of their own they can only learn of it from its stopped heartbeat, as workers on
separate machines do. Only this wrapper patches `socket.gethostname`; the product code has no test hooks.
"""
from __future__ import annotations

import socket
import sys


def main() -> int:
    host, argv = sys.argv[1], sys.argv[2:]
    socket.gethostname = lambda: host
    from blipexp.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    from blipexp.runtime.exiting import exit_now

    exit_now(main())  # as `python -m blipexp` ends
