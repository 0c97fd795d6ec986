"""A reading taken in the background while a block runs: peak memory, a thread's CPU time."""
from __future__ import annotations

import threading


class Sampler:
    """Calls `sample()` every `every_s` seconds in a daemon thread while the `with` block runs, and once at its end."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()  # what happened since the last tick

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()
