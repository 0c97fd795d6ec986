"""Dynamic batching: items submitted by concurrent callers are run together, in batches, by one worker thread.

The served model's use: MLflow's scoring server runs each request's `predict` in a thread of its own, so concurrent
requests can put their images on one queue and share one batched `generate` (what Triton's dynamic batcher,
TorchServe's `batch_size`/`max_batch_delay` and Ray Serve's `@serve.batch` do).

The worker takes the oldest waiting item and the waiting items of the same key (never others: a key is what must
be equal within a batch, e.g. the generation settings), at most `max_batch` of them; when fewer wait, it waits up to
`max_wait_s` after the oldest arrived for more, then runs `run(key, items)`. Under load it waits longer, up to
`busy_wait_s` from when it starts gathering, for as many items of its key as were in flight at once since its key's
last batch: otherwise concurrent callers split into cohorts that take turns (while one cohort's batch runs, the
other's items queue, and the first cohort's next items arrive just after the other's batch has left), each batch half
full. A lone caller of a key (one item of it in flight) never waits more than `max_wait_s`, however busy other keys
are. A batch that raises, or returns a wrong number of results, fails its own items only. A caller that stops
waiting cancels its futures: those not yet running leave the queue unrun, and the worker goes on. The worker starts
when an item arrives and ends after `idle_s` with an empty queue: an idle batcher holds no thread. `max_batch=0`
turns batching off: each call runs its items itself, in its own thread, at once.

Each batch is logged at DEBUG on `blipexp.serving.batcher` ("batch of N from K request(s) in T ms: KEY"), a failed
one at ERROR with its traceback.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
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
        self._in_flight: Counter = Counter()  # per key: items submitted and neither answered nor dropped
        self._peak: dict[Hashable, int] = {}  # per key: the most of its items in flight at once since its last batch
        self._queue: list[_Entry] = []
        self._ready = threading.Condition()
        self._worker: threading.Thread | None = None
        self._calls = itertools.count()

    def submit(self, key: Hashable, items: Sequence, limit: int | None = None) -> list[Future]:
        """One future per item, resolved with its result or its batch's exception. `limit` caps the batches these
        items join (below max_batch); items of one key should share it. Cancel a future to stop waiting for it: if
        its batch has not started, its item is not run."""
        call = next(self._calls)
        if not self.max_batch:
            return self._run([_Entry(key, item, len(items), call, time.monotonic()) for item in items])
        entries = [_Entry(key, item, max(1, min(limit or self.max_batch, self.max_batch)), call, time.monotonic())
                   for item in items]
        for entry in entries:
            entry.future.add_done_callback(self._wake_if_cancelled)
        with self._ready:
            self._queue.extend(entries)
            self._in_flight[key] += len(entries)
            self._peak[key] = max(self._peak.get(key, 0), self._in_flight[key])
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="blipexp-batcher", daemon=True)
                self._worker.start()
            self._ready.notify()
        return [entry.future for entry in entries]

    def _work(self) -> None:
        try:
            while True:
                with self._ready:
                    self._drop_cancelled()
                    if not self._queue:  # idle: stay for the next request a while, it need not start a thread
                        self._ready.wait(self.idle_s)
                        self._drop_cancelled()
                    if not self._queue:
                        self._worker = None  # under the lock: a submit after this starts a new worker
                        self._peak.clear()  # nothing is in flight: the next calls start afresh
                        return
                    batch = self._gather()
                if batch:
                    self._run(batch, answering=self._answering)
        finally:  # should anything else end this thread, the next submit starts a worker instead of waiting for it
            with self._ready:
                if self._worker is threading.current_thread():
                    self._worker = None

    def _gather(self) -> list[_Entry]:
        """The oldest entry's batch, taken off the queue: entries of its key, waiting for more until it is full, or
        max_wait_s has passed since the oldest arrived and it holds as many items of its key as were in flight at
        once since the key's last batch, or busy_wait_s has passed since gathering began. Empty if the oldest was
        cancelled meanwhile (the worker then gathers from the next). Called holding the lock."""
        first = self._queue[0]
        expected = min(first.limit, self._peak[first.key])  # under load: the items that will come back soon
        self._peak[first.key] = self._in_flight[first.key]
        short, busy = first.arrived + self.max_wait_s, time.monotonic() + self.busy_wait_s
        while not first.future.cancelled():
            batch = [entry for entry in self._queue
                     if entry.key == first.key and not entry.future.cancelled()][:first.limit]
            now = time.monotonic()
            if len(batch) >= first.limit or (now >= short and (len(batch) >= expected or now >= busy)):
                taken = {id(entry) for entry in batch}
                self._queue = [entry for entry in self._queue if id(entry) not in taken]
                return batch
            self._ready.wait((short if now < short else busy) - now)
        return []

    def _drop_cancelled(self) -> None:
        """Entries whose callers cancelled them (they stopped waiting) leave the queue unrun. Called holding the
        lock."""
        kept = []
        for entry in self._queue:
            if entry.future.cancelled():
                self._leave(entry.key, 1)
            else:
                kept.append(entry)
        self._queue = kept

    def _wake_if_cancelled(self, future: Future) -> None:
        """A caller cancelled a queued item: the worker, maybe waiting for the batch it was in, looks again."""
        if future.cancelled():
            with self._ready:
                self._ready.notify()

    def _answering(self, key: Hashable, count: int) -> None:
        """Before a batch's callers get their answers (and may submit again at once): they are no longer in flight."""
        with self._ready:
            self._leave(key, count)

    def _leave(self, key: Hashable, count: int) -> None:
        """`count` items of `key` are no longer in flight. Called holding the lock."""
        self._in_flight[key] -= count
        if not self._in_flight[key]:
            del self._in_flight[key]

    def _run(self, batch: list[_Entry],
             answering: Callable[[Hashable, int], None] = lambda key, count: None) -> list[Future]:
        """Run the batch's items and answer each one's future, whatever happens."""
        started = time.perf_counter()
        # running: a caller can no longer cancel them, so answering cannot fail. A cancelled one is not run.
        running = [entry for entry in batch if entry.future.set_running_or_notify_cancel()]
        calls = len({entry.call for entry in running})
        outcome: BaseException | Sequence = RuntimeError("the batch stopped before its results")
        try:
            if running:
                results = self.run(batch[0].key, [entry.item for entry in running])
                if len(results) != len(running):  # fails this batch only; zip would leave some callers unanswered
                    raise RuntimeError(f"run returned {len(results)} results for {len(running)} items")
                outcome = results
                log.debug("batch of %d from %d request(s) in %.0f ms: %s", len(running), calls,
                          (time.perf_counter() - started) * 1000, batch[0].key)
        except Exception as exc:  # the batch's own items fail; the worker and later batches go on
            log.exception("batch of %d from %d request(s) failed: %s", len(running), calls, batch[0].key)
            outcome = exc
        finally:
            answering(batch[0].key, len(batch))
            for index, entry in enumerate(running):
                if isinstance(outcome, BaseException):
                    entry.future.set_exception(outcome)
                else:
                    entry.future.set_result(outcome[index])
        return [entry.future for entry in batch]
