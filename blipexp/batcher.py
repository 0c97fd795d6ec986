"""Dynamic batching: items submitted by concurrent callers are run together, in batches, by one worker thread.

The served model's use: MLflow's scoring server runs each request's `predict` in a thread of its own, so concurrent
requests can put their images on one queue and share one batched `generate` (what Triton's dynamic batcher,
TorchServe's `batch_size`/`max_batch_delay` and Ray Serve's `@serve.batch` do).

The worker takes the oldest waiting item and the waiting items of the same key (never others: a key is what must
be equal within a batch, e.g. the generation settings), at most `max_batch` of them; when fewer wait, it waits up to
`max_wait_s` after the oldest arrived for more, then runs `run(key, items)`. Under load it waits longer, up to
`busy_wait_s` from when it starts gathering, for as many items as were in flight at once since the last batch:
otherwise concurrent callers split into cohorts that take turns (while one cohort's batch runs, the other's items
queue, and the first cohort's next items arrive just after the other's batch has left), each batch half full. A lone
caller (one item in flight) never waits more than `max_wait_s`. A batch that raises fails its own items
only. The worker starts when an item arrives and ends when the queue is empty: an idle batcher holds no thread.
`max_batch=0` turns batching off: each call runs its items itself, in its own thread, at once.

Each batch is logged at DEBUG on `blipexp.batcher` ("batch of N from K request(s) in T ms: KEY"), a failed one at
ERROR with its traceback.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)
# How long the worker thread stays idle before it ends. Ending as soon as the queue emptied started a thread per
# request for a lone client, whose median was 12-13 ms slower than batching off (BENCHMARKS.md): a new thread's
# first torch calls pay for their own thread state.
IDLE_S = 60.0


@dataclass
class _Entry:
    key: Hashable
    item: Any
    limit: int  # the largest batch this item may be run in
    call: int  # which submit call it came from (for the log)
    arrived: float
    future: Future = field(default_factory=Future)


class Batcher:
    """Runs `run(key, items) -> results` (one result per item, in order) on batches of submitted items."""

    def __init__(self, run: Callable[[Hashable, list], Sequence], max_batch: int, max_wait_s: float,
                 busy_wait_s: float = 0.0, idle_s: float = IDLE_S) -> None:
        if max_batch < 0 or max_wait_s < 0 or busy_wait_s < 0:
            raise ValueError(f"max_batch={max_batch} (0: off), max_wait_s={max_wait_s} and busy_wait_s={busy_wait_s} "
                             "must be >= 0")
        self.run, self.max_batch, self.max_wait_s, self.busy_wait_s = run, max_batch, max_wait_s, busy_wait_s
        self.idle_s = idle_s
        self._in_flight = 0  # items submitted and not yet answered
        self._peak = 0  # the most items in flight at once since the last batch was gathered
        self._queue: list[_Entry] = []
        self._ready = threading.Condition()
        self._worker: threading.Thread | None = None
        self._calls = itertools.count()

    def submit(self, key: Hashable, items: Sequence, limit: int | None = None) -> list[Future]:
        """One future per item, resolved with its result or its batch's exception. `limit` caps the batches these
        items join (below max_batch); items of one key should share it."""
        call = next(self._calls)
        if not self.max_batch:
            return self._run([_Entry(key, item, len(items), call, time.monotonic()) for item in items])
        entries = [_Entry(key, item, max(1, min(limit or self.max_batch, self.max_batch)), call, time.monotonic())
                   for item in items]
        with self._ready:
            self._queue.extend(entries)
            self._in_flight += len(entries)
            self._peak = max(self._peak, self._in_flight)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="blipexp-batcher", daemon=True)
                self._worker.start()
            self._ready.notify()
        return [entry.future for entry in entries]

    def _work(self) -> None:
        while True:
            with self._ready:
                if not self._queue:  # idle: stay for the next request a while, it need not start a thread
                    self._ready.wait(self.idle_s)
                if not self._queue:
                    self._worker = None  # under the lock: a submit after this starts a new worker
                    return
                batch = self._gather()
            self._run(batch, answering=self._answering)

    def _gather(self) -> list[_Entry]:
        """The oldest entry's batch, taken off the queue: entries of its key, waiting for more until it is full, or
        max_wait_s has passed since the oldest arrived and it holds as many items as were in flight at once since
        the last batch, or busy_wait_s has passed since gathering began. Called holding the lock."""
        first = self._queue[0]
        expected = min(first.limit, self._peak)  # under load: the items that will come back soon
        self._peak = self._in_flight
        short, busy = first.arrived + self.max_wait_s, time.monotonic() + self.busy_wait_s
        while True:
            batch = [entry for entry in self._queue if entry.key == first.key][:first.limit]
            now = time.monotonic()
            if len(batch) >= first.limit or (now >= short and (len(batch) >= expected or now >= busy)):
                break
            self._ready.wait((short if now < short else busy) - now)
        taken = {id(entry) for entry in batch}
        self._queue = [entry for entry in self._queue if id(entry) not in taken]
        return batch

    def _answering(self, count: int) -> None:
        """Before a batch's callers get their answers (and may submit again at once): they are no longer in flight."""
        with self._ready:
            self._in_flight -= count

    def _run(self, batch: list[_Entry], answering: Callable[[int], None] = lambda count: None) -> list[Future]:
        started = time.perf_counter()
        calls = len({entry.call for entry in batch})
        try:
            results = self.run(batch[0].key, [entry.item for entry in batch])
            assert len(results) == len(batch), f"run returned {len(results)} results for {len(batch)} items"
        except Exception as exc:  # the batch's own items fail; the worker and later batches go on
            log.exception("batch of %d from %d request(s) failed: %s", len(batch), calls, batch[0].key)
            answering(len(batch))
            for entry in batch:
                entry.future.set_exception(exc)
        else:
            log.debug("batch of %d from %d request(s) in %.0f ms: %s", len(batch), calls,
                      (time.perf_counter() - started) * 1000, batch[0].key)
            answering(len(batch))
            for entry, result in zip(batch, results):
                entry.future.set_result(result)
        return [entry.future for entry in batch]
