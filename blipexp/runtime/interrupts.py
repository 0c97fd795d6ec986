"""Ctrl-C and SIGTERM stop a command at a safe point, never in the middle of a decision.

A first signal only asks to stop: training ends at the next step's end or evaluation batch (`check`; the ranks of
a DDP run agree on the step), a sweep before its next trial. Code that must not be cut in two (a trial's run ended
and the study told, under the study lock) runs `held()`: a stop is never raised inside it. Where no safe point
comes within the grace period (a long phase with none, a stalled step), the stop is raised where the program is, as
Python does for Ctrl-C; a second signal stops at once; a third one gets the default behaviour (SIGTERM ends the
process). The grace is short by default because `docker stop` sends SIGKILL 10 s after SIGTERM, and clean-up needs
some of those seconds.

Ctrl-C in a terminal, `kill -- -PGID` and systemd signal every process of the group, DataLoader workers too: a child
forked while signals are caught here leaves stopping to its parent, which ends it (`_leave_stopping_to_the_parent`).
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

GRACE_ENV = "BLIPEXP_STOP_GRACE_S"
DEFAULT_GRACE_S = 5.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM asked to stop: raised in the main thread, so every `finally` and handler runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signum_of(stop: KeyboardInterrupt) -> int:
    """The signal that stopped the command: Interrupted carries it; a plain KeyboardInterrupt is Ctrl-C."""
    return stop.signum if isinstance(stop, Interrupted) else signal.SIGINT


@dataclass
class _State:
    owner: int | None = None  # the process catching the signals (its forked children leave stopping to it)
    signum: int | None = None  # the first signal: a stop was asked
    signals: int = 0
    held: int = 0  # depth of held() sections
    overdue: bool = False  # the stop is due (grace over, or a second signal) but a held section runs
    raised: bool = False  # the stop was raised once: later checks let the clean-up run


_state = _State()


def grace_seconds() -> float:
    raw = os.environ.get(GRACE_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_GRACE_S
    except ValueError:
        raise ValueError(f"{GRACE_ENV}={raw!r} is not a number of seconds: set it to e.g. 5") from None
    if value <= 0:
        raise ValueError(f"{GRACE_ENV}={raw!r} must be above 0 seconds: set it to e.g. 5")
    return value


@contextmanager
def stop_at_safe_points() -> Iterator[None]:
    """Catch SIGINT and SIGTERM for the body (main thread only; elsewhere signals keep their handlers)."""
    global _state
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    grace = grace_seconds()
    saved = {signum: signal.getsignal(signum) for signum in (*SIGNALS, signal.SIGALRM)}
    outer, _state = _state, _State(owner=os.getpid())
    for signum in SIGNALS:
        signal.signal(signum, lambda number, frame: _on_signal(number, grace))
    signal.signal(signal.SIGALRM, lambda number, frame: _stop_now())
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        _state = outer


def requested() -> bool:
    """A stop was asked and not yet raised."""
    return _state.signum is not None and not _state.raised


def check(agree: Callable[[int], int] | None = None) -> None:
    """A safe point: stop here if a stop was asked. `agree`: for processes that must stop at the same point (the
    ranks of a DDP run, which all call it here), the signal asked in any of them (0: none) from this one's."""
    asked = _state.signum if requested() else 0
    if agree is not None:
        asked = agree(asked)  # every process calls it here, asked or not
    if asked and not _state.held and not _state.raised:
        _state.signum = _state.signum or asked  # asked in another process: this one stops with its signal
        _raise()


@contextmanager
def held() -> Iterator[None]:
    """A section no stop cuts in two: one that falls due inside is raised when the section ends."""
    _state.held += 1
    try:
        yield
    finally:
        _state.held -= 1
    if _state.overdue and not _state.held and not _state.raised:
        _raise()


def _leave_stopping_to_the_parent() -> None:
    """In a child forked while its parent catches the signals (a DataLoader worker, forked as torch does on Linux):
    a signal to the whole group is the parent's to act on, and the child goes on serving it until the parent ends
    it. SIGINT is ignored. SIGTERM is blocked and taken by a thread that ends the child only when its parent sent it
    (as multiprocessing ends workers): torch's own handler ends a worker on anyone's, and the parent then fails."""
    global _state
    if _state.owner is None:  # forked outside stop_at_safe_points: the child's signals are its own
        return
    _state = _State()  # the parent's stop is not the child's
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_end_on_sigterm_from, args=(os.getppid(),), daemon=True).start()


def _end_on_sigterm_from(parent: int) -> None:
    while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
        pass
    os._exit(0)


os.register_at_fork(after_in_child=_leave_stopping_to_the_parent)


def _on_signal(signum: int, grace: float) -> None:
    _state.signals += 1
    if _state.signals == 1:
        _state.signum = signum
        _say(f"\n{signal.Signals(signum).name}: stopping at the next safe point (in at most {grace:g} s; send it "
             "again to stop now)\n")
        signal.setitimer(signal.ITIMER_REAL, grace)
        return
    for number in SIGNALS:  # a third signal: SIGTERM ends the process, Ctrl-C raises wherever it lands
        signal.signal(number, signal.SIG_DFL if number == signal.SIGTERM else signal.default_int_handler)
    _stop_now()


def _say(line: str) -> None:
    """To file descriptor 2, not through print: a handler that prints while the main thread is inside a print of its
    own fails (a reentrant call), and a captured sys.stderr may have no descriptor."""
    try:
        os.write(2, line.encode())
    except OSError:  # no stderr: the stop still happens, unannounced
        pass


def _stop_now() -> None:
    """The grace is over, or a second signal came: stop where the program is, unless a held section runs."""
    if _state.raised:
        return
    if _state.held:
        _state.overdue = True
        return
    _raise()


def _raise() -> None:
    assert _state.signum is not None, "a stop is raised only after a signal asked for it"
    _state.raised = True
    signal.setitimer(signal.ITIMER_REAL, 0)
    raise Interrupted(_state.signum)
