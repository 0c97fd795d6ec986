"""For tests that start real processes: a free loopback port, and an environment for child processes."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable

STORE_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "BLIPEXP_STORAGE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """This environment, offline, without inherited store variables (a child `--home` uses that home's store)."""
    env = {k: v for k, v in os.environ.items() if k not in STORE_VARIABLES}
    return {**env, "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true", **extra}


def wait_for_health(server: subprocess.Popen, base: str, seconds: float, log: Callable[[], str] = lambda: "") -> None:
    """Until `base`/health answers; fails with the server's log if it exits or stays silent for `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, f"{server.args[:4]} exited {server.returncode}:\n{log()[-3000:]}"
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{base} did not answer in {seconds} s:\n{log()[-3000:]}"
            time.sleep(0.5)


def kill_group(process: subprocess.Popen) -> None:
    """End a process started with start_new_session and every process it started (its group), at once: where how a
    server stops is not what a test checks (test_cli.py sends `blipexp ui` its SIGTERM), a graceful stop would only
    cost each Python process of the group seconds of teardown."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
