"""One-machine locks between processes that share files: parallel sweep workers, concurrent promotes.

Built on `filelock` (a declared dependency, which torch needs anyway) rather than on `fcntl` directly: on
Linux and macOS it takes the same kernel `flock` on the file, which the kernel drops when its holder dies, even
by SIGKILL, so a killed process never leaves a stale lock; on top of that it gives the timeout the promote lock
needs (plain `flock` blocks forever or not at all), fails fast instead of deadlocking when one thread takes a
lock it already holds through another handle, and works on Windows. It does not reach across machines.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout


@contextmanager
def file_lock(path: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the exclusive lock on file `path` for the body, waiting for other holders (at most `timeout` s)."""
    lock = FileLock(str(path), timeout=-1 if timeout is None else timeout)  # -1: wait for as long as it takes
    try:
        lock.acquire()
    except Timeout:
        raise ValueError(f"another process has held the lock {path} for over {timeout:g} s: wait for it to finish "
                         "(or end it), then try again") from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def hold(home: Path, name: str) -> Iterator[None]:
    """Hold the exclusive lock `name` in `home` for the body; waits for other holders."""
    folder = Path(home) / "locks"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"run-state folder {home} is not writable ({exc.strerror}): "
                         "pass --home DIR or set BLIPEXP_HOME to a writable folder") from exc
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    with file_lock(folder / f"{safe}.lock"):
        yield
