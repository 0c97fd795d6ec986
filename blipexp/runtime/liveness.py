"""Whether the process that started a trial or a run is still that process.

A process is named by host, pid and start time. Host and pid alone mislead: after a container restart the host name
and the low pids come back, and a pid reused by another process (even another user's, which `os.kill(pid, 0)` reports
as PermissionError) would keep a dead worker's trial "running" forever. The start time tells a reused pid apart.
"""
from __future__ import annotations

import os
import socket

import psutil

START_TOLERANCE_S = 0.05  # psutil derives start times from boot time and clock ticks: equal to well within this


def this_process() -> dict[str, str]:
    """This process as recorded on a trial or run: host, pid, start time (seconds since the epoch)."""
    return {"host": socket.gethostname(), "pid": str(os.getpid()), "started": f"{psutil.Process().create_time():.3f}"}


def on_this_host(recorded: dict) -> bool:
    return recorded.get("host") == socket.gethostname()


def alive(recorded: dict) -> bool:
    """Whether the process recorded (host, pid, started) on this host is still running. A record without a start
    time (made before blipexp kept one) falls back to whether its pid exists."""
    assert on_this_host(recorded), "only a process of this host can be looked at"
    pid = int(recorded.get("pid") or 0)
    if pid <= 0:
        return False
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process holds the pid: not a worker of ours, unless no start time
        return not recorded.get("started")
    if not recorded.get("started"):
        return True
    return abs(started - float(recorded["started"])) < START_TOLERANCE_S
