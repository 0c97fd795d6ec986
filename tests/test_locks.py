"""File locks between real processes: mutual exclusion, the timeout's message, a SIGKILLed holder's lock freed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from processes import child_env

from blipexp.runtime import locks

HOLDER = """
import sys
from pathlib import Path
from blipexp.runtime import locks
with locks.{call}:
    print("held", flush=True)
    sys.stdin.readline()  # hold until told to let go (or killed)
"""

TAKE_TURNS = """
import sys, time
from pathlib import Path
from blipexp.runtime import locks
lock, log, me = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
for _ in range(20):
    with locks.file_lock(lock):
        with log.open("a") as out:
            out.write(f"{me} in\\n")
        time.sleep(0.01)  # widen the window another process would enter through, were the lock not exclusive
        with log.open("a") as out:
            out.write(f"{me} out\\n")
"""


def start_holder(call: str) -> subprocess.Popen:
    """A process that takes the lock `locks.<call>`, prints "held" and keeps it until its stdin has a line."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.format(call=call)], env=child_env(), text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = holder.stdout.readline()
    assert line == "held\n", f"the holder did not take the lock: {line!r} {holder.stderr.read()[-2000:]}"
    return holder


def test_two_processes_take_turns(tmp_path):
    lock, log = tmp_path / "turns.lock", tmp_path / "log.txt"
    workers = [subprocess.Popen([sys.executable, "-c", TAKE_TURNS, str(lock), str(log), name], env=child_env(),
                                stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err[-2000:]
    lines = log.read_text().splitlines()
    assert len(lines) == 80
    pairs = list(zip(lines[::2], lines[1::2]))
    assert all(enter.split()[0] == leave.split()[0] and (enter.split()[1], leave.split()[1]) == ("in", "out")
               for enter, leave in pairs), "a process entered while the other held the lock"


def test_timeout_names_the_lock_file(tmp_path):
    lock = tmp_path / "busy.lock"
    holder = start_holder(f"file_lock(Path({str(lock)!r}))")
    try:
        with pytest.raises(ValueError, match=f"another process has held the lock {lock} for over 0.2 s: wait"):
            with locks.file_lock(lock, timeout=0.2):
                pass
    finally:
        holder.communicate("go\n", timeout=30)
    with locks.file_lock(lock, timeout=0):  # let go: free at once
        pass


def test_a_killed_holder_frees_the_lock(tmp_path):
    lock = tmp_path / "killed.lock"
    holder = start_holder(f"file_lock(Path({str(lock)!r}))")
    with pytest.raises(ValueError, match="another process has held"):
        with locks.file_lock(lock, timeout=0):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate(timeout=30)
    assert holder.returncode == -signal.SIGKILL
    with locks.file_lock(lock, timeout=0):  # nothing stale is left behind
        pass


def test_hold_is_a_file_lock_in_the_homes_lock_folder(tmp_path):
    home = tmp_path / "home"
    holder = start_holder(f"hold(Path({str(home)!r}), 'study: one/two')")
    try:
        with pytest.raises(ValueError, match="another process has held"):
            with locks.file_lock(home / "locks" / "study__one_two.lock", timeout=0):
                pass
    finally:
        holder.communicate("go\n", timeout=30)
