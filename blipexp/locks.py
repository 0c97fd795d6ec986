"""One-machine locks between the processes that share a blipexp home (parallel sweep workers).

`fcntl.flock` on a file under `<home>/locks/`: the kernel drops the lock when its holder dies, even by
SIGKILL, so a killed worker never leaves a stale lock behind. It does not reach across machines.
"""
from __future__ import annotations

import fcntl
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
    with open(folder / f"{safe}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
