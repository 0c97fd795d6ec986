"""The batcher alone, with a plain function for a model: what joins a batch, what a failure touches, and when it runs.

Each test holds the worker inside a first batch (a gate) while it submits more, so which items wait together is
decided by the test, not by timing."""
import logging
import sys
import threading
import time

import pytest

from blipexp.serving.batcher import Batcher

WAIT = 30  # seconds: a bound on event waits, never reached when the code works


class Model:
    """Records each batch; its first batch waits at the gate until the test opens it; "boom" makes a batch raise."""

    def __init__(self) -> None:
        self.batches: list[tuple] = []
        self.threads: list[threading.Thread] = []
        self.started, self.gate = threading.Event(), threading.Event()

    def __call__(self, key, items):
        self.threads.append(threading.current_thread())
        self.batches.append((key, list(items)))
        self.started.set()
        assert self.gate.wait(WAIT)
        if "boom" in items:
            raise RuntimeError("injected failure")
        answers = [f"{key}:{item}" for item in items]
        return answers[:-1] if "short" in items else answers

    def hold(self, batcher: Batcher, key="first") -> list:
        """Submit a first item and wait until the worker runs it (and waits at the gate)."""
        futures = batcher.submit(key, ["a"])
        assert self.started.wait(WAIT)
        return futures


def results(futures) -> list:
    return [f.result(timeout=WAIT) for f in futures]


def gathering(thread: threading.Thread) -> bool:
    """Whether the worker waits, inside `_gather`, for more items (polled with a deadline: no sleep decides)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread.ident)
        if frame is not None and frame.f_code.co_name == "wait" and frame.f_back.f_code.co_name == "_gather":
            return True
        time.sleep(0.001)
    return False


def test_waiting_calls_of_one_key_share_a_batch_and_each_gets_its_own_results_in_order():
    model = Model()
    batcher = Batcher(model, max_batch=4, max_wait_s=0)
    first = model.hold(batcher)
    b = batcher.submit("k1", ["b1", "b2"])
    c = batcher.submit("k2", ["c1"])
    d = batcher.submit("k1", ["d1"])
    model.gate.set()
    assert results(first) == ["first:a"]
    assert results(b) == ["k1:b1", "k1:b2"] and results(c) == ["k2:c1"] and results(d) == ["k1:d1"]
    assert model.batches == [("first", ["a"]), ("k1", ["b1", "b2", "d1"]), ("k2", ["c1"])], \
        "the oldest waiting key goes first, with every waiting item of its key; other keys never join it"


def test_batches_hold_at_most_max_batch_items_and_at_most_the_calls_limit():
    model = Model()
    batcher = Batcher(model, max_batch=2, max_wait_s=0)
    model.hold(batcher)
    five = batcher.submit("k", list("12345"))
    one_at_a_time = batcher.submit("small", ["x", "y"], limit=1)
    model.gate.set()
    assert results(five) == [f"k:{i}" for i in "12345"] and results(one_at_a_time) == ["small:x", "small:y"]
    assert [len(items) for _, items in model.batches[1:]] == [2, 2, 1, 1, 1]


def test_a_batch_that_raises_fails_its_own_items_only_and_the_batcher_goes_on(caplog):
    model = Model()
    batcher = Batcher(model, max_batch=4, max_wait_s=0)
    model.hold(batcher)
    failing = batcher.submit("k1", ["boom", "x"])
    other_key = batcher.submit("k2", ["y"])
    with caplog.at_level(logging.ERROR, logger="blipexp.serving.batcher"):
        model.gate.set()
        for future in failing:
            with pytest.raises(RuntimeError, match="injected failure"):
                future.result(timeout=WAIT)
        assert results(other_key) == ["k2:y"]
    assert results(batcher.submit("k1", ["z"])) == ["k1:z"]
    assert "batch of 2 from 1 request(s) failed: k1" in caplog.text and "injected failure" in caplog.text


def test_a_cancelled_item_is_not_run_and_the_batcher_goes_on():
    """A caller that stops waiting cancels its futures. Before: answering a cancelled future raised in the worker,
    which died holding its place, and every later call waited forever."""
    model = Model()
    batcher = Batcher(model, max_batch=4, max_wait_s=0)
    model.hold(batcher)
    gone, kept = batcher.submit("k", ["gone", "kept"])
    assert gone.cancel()
    model.gate.set()
    assert results([kept]) == ["k:kept"]
    assert results(batcher.submit("k", ["later"])) == ["k:later"]
    assert [items for _, items in model.batches[1:]] == [["kept"], ["later"]], "the cancelled item never ran"


def test_a_cancelled_item_leaves_the_batch_that_waits_for_it():
    """The worker waits for a full batch; its first item is cancelled meanwhile: a later full batch runs without it."""
    model = Model()
    model.gate.set()
    batcher = Batcher(model, max_batch=2, max_wait_s=WAIT * 10)
    (gone,) = batcher.submit("k", ["gone"])
    assert gone.cancel()
    pair = batcher.submit("k", ["a", "b"])
    assert results(pair) == ["k:a", "k:b"] and model.batches == [("k", ["a", "b"])]


def test_a_wrong_number_of_results_fails_that_batch_only(caplog):
    model = Model()
    batcher = Batcher(model, max_batch=4, max_wait_s=0)
    model.hold(batcher)
    short = batcher.submit("k1", ["short", "x"])
    other_key = batcher.submit("k2", ["y"])
    with caplog.at_level(logging.ERROR, logger="blipexp.serving.batcher"):
        model.gate.set()
        for future in short:
            with pytest.raises(RuntimeError, match="run returned 1 results for 2 items"):
                future.result(timeout=WAIT)
    assert results(other_key) == ["k2:y"] and results(batcher.submit("k1", ["z"])) == ["k1:z"]
    assert "batch of 2 from 1 request(s) failed: k1" in caplog.text


def test_the_first_item_waits_up_to_max_wait_for_more_and_runs_as_soon_as_its_batch_is_full():
    """A wait far longer than the test: the batch runs because it filled, not because the wait ran out."""
    model = Model()
    model.gate.set()
    batcher = Batcher(model, max_batch=3, max_wait_s=WAIT * 10)
    first = batcher.submit("k", ["a"])
    assert not first[0].done()
    rest = batcher.submit("k", ["b", "c"])
    assert results(first + rest) == ["k:a", "k:b", "k:c"]
    assert model.batches == [("k", ["a", "b", "c"])]


def test_under_load_a_batch_waits_for_the_items_that_were_in_flight_not_only_those_queued():
    """Cohorts: while a batch runs, others queue; its callers come back just after the queued ones would have left
    alone. The queued batch waits (up to busy_wait) for as many items as were in flight, then runs at once."""
    model = Model()
    batcher = Batcher(model, max_batch=8, max_wait_s=0, busy_wait_s=WAIT * 10)
    first = model.hold(batcher, "k")  # one item running: with three queued below, four were in flight at once
    queued = [batcher.submit("k", [f"q{i}"]) for i in range(3)]
    model.gate.set()
    assert results(first) == ["k:a"]
    assert gathering(model.threads[0]), "the worker waits for the fourth item that was in flight"
    assert not any(f[0].done() for f in queued)
    back = batcher.submit("k", ["again"])  # the first caller's next request
    assert results([f[0] for f in queued] + back) == ["k:q0", "k:q1", "k:q2", "k:again"]
    assert model.batches[1] == ("k", ["q0", "q1", "q2", "again"])


def test_a_keys_lone_item_does_not_wait_for_the_items_of_other_keys():
    """Busy with one key, a lone item of another runs after max_wait: the items it waits for are its key's only.
    Before: it waited the whole busy_wait for as many items as all keys had in flight (here far longer than the
    test's bound on a result)."""
    model = Model()
    batcher = Batcher(model, max_batch=8, max_wait_s=0, busy_wait_s=WAIT * 10)
    model.hold(batcher, "busy")
    lone = batcher.submit("lone", ["x"])  # oldest in the queue: its batch is gathered first
    busy = [batcher.submit("busy", [f"b{i}"]) for i in range(2)]  # with the held one, three "busy" in flight
    model.gate.set()
    assert results(lone) == ["lone:x"]
    assert gathering(model.threads[0]), "the busy key's two wait for its third, which was in flight"
    back = batcher.submit("busy", ["again"])
    assert results([f[0] for f in busy] + back) == ["busy:b0", "busy:b1", "busy:again"]
    assert model.batches[1:] == [("lone", ["x"]), ("busy", ["b0", "b1", "again"])]


def test_a_lone_caller_never_waits_for_the_busy_wait():
    """One item in flight at a time: each batch runs after max_wait, whatever busy_wait is (here far longer than
    the test's bound on a result)."""
    model = Model()
    model.gate.set()
    batcher = Batcher(model, max_batch=8, max_wait_s=0, busy_wait_s=WAIT * 10)
    for item in "abc":
        assert results(batcher.submit("k", [item])) == [f"k:{item}"]
    assert [items for _, items in model.batches] == [["a"], ["b"], ["c"]]


def test_the_worker_serves_calls_that_come_while_it_idles():
    """A lone client's next request finds the same thread (a new one per request cost it 12 ms)."""
    model = Model()
    model.gate.set()
    batcher = Batcher(model, max_batch=4, max_wait_s=0, idle_s=WAIT * 10)
    for item in ("a", "b"):  # in turn, as one client sends them
        assert results(batcher.submit("k", [item])) == [f"k:{item}"]
    assert model.threads[1] is model.threads[0], "the second call was served by the waiting worker"


def test_an_idle_worker_ends_after_idle_s_and_the_next_call_starts_another():
    """An idle batcher ends its thread (and, through it, its hold on the model) after idle_s."""
    model = Model()
    model.gate.set()
    batcher = Batcher(model, max_batch=4, max_wait_s=0, idle_s=0.01)
    assert results(batcher.submit("k", ["a"])) == ["k:a"]
    model.threads[0].join(WAIT)
    assert not model.threads[0].is_alive(), "an idle batcher holds no thread after idle_s"
    assert results(batcher.submit("k", ["b"])) == ["k:b"]
    assert model.threads[1] is not model.threads[0]


def test_max_batch_0_runs_each_call_alone_in_its_own_thread(caplog):
    model = Model()
    model.gate.set()
    batcher = Batcher(model, max_batch=0, max_wait_s=0.5)
    with caplog.at_level(logging.DEBUG, logger="blipexp.serving.batcher"):
        futures = batcher.submit("k", ["a", "b", "c"])
        assert all(f.done() for f in futures), "done on return: nothing waits"
        assert results(futures) == ["k:a", "k:b", "k:c"]
    assert model.threads == [threading.current_thread()]
    assert "batch of 3 from 1 request(s) in" in caplog.text


def test_each_batch_is_logged_at_debug_with_its_size_requests_and_key(caplog):
    model = Model()
    batcher = Batcher(model, max_batch=8, max_wait_s=0)
    with caplog.at_level(logging.DEBUG, logger="blipexp.serving.batcher"):
        model.hold(batcher)
        later = batcher.submit("k", ["1", "2"]) + batcher.submit("k", ["3"])
        model.gate.set()
        results(later)
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == [
        "batch of 1 from 1 request(s)", "batch of 3 from 2 request(s)"]
    assert caplog.records[-1].getMessage().endswith(": k")


def test_settings_must_not_be_negative():
    with pytest.raises(ValueError, match="max_batch=-1 .* must be >= 0"):
        Batcher(lambda key, items: items, max_batch=-1, max_wait_s=0)
