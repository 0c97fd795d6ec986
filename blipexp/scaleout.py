"""Sweeps across machines: an Optuna study in a database (PostgreSQL) that workers on any host join.

What one machine gets from files in the blipexp home, this gets from the database:

- the study lock: every decision taken once (create the sweep run, start a trial while the total is not
  reached, keep the best model, register) runs under a PostgreSQL advisory lock named after the study. The
  server drops it when its holder's connection closes, so a SIGKILLed worker never leaves it held.
- dead workers: each running trial records a heartbeat; a trial silent for longer than the grace period,
  GRACE_HEARTBEATS x the heartbeat interval (3 x 30 s = 90 s by default, $BLIPEXP_HEARTBEAT_SECONDS), is
  failed by the next worker that looks (its worker was killed, or its machine died), and its params retried.
  Host + pid (sweep.fail_orphaned_trials) only sees workers on its own machine.
- a live worker whose heartbeats were late for longer than the grace period (e.g. the database was unreachable)
  finds its trial failed behind its back: its heartbeat thread notices at the next beat, and the trial stops at
  its next epoch end (TrialLost), its run KILLED, its model dropped; the worker goes on with the next trial.

Optuna has no public accessor for a study's storage, which ask/tell heartbeats need: storage_of() is the one
place that reads Optuna's internals (pyproject.toml pins the tested major versions).

The URL comes from --storage or $BLIPEXP_STORAGE. Any SQLAlchemy URL opens; only PostgreSQL locks across
machines (others fall back to the home's file lock: one machine).
"""
from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import TrialState
from sqlalchemy.pool import NullPool

from . import locks

STORAGE_ENV = "BLIPEXP_STORAGE"
HEARTBEAT_ENV = "BLIPEXP_HEARTBEAT_SECONDS"
HEARTBEAT_SECONDS = 30  # a trial silent for GRACE_HEARTBEATS of these is taken for dead
GRACE_HEARTBEATS = 3
CONNECT_TIMEOUT_S = 10  # an unreachable database host fails in seconds, not after TCP's minutes

STALE_REASON = "its worker stopped (no heartbeat)"
LOST_REASON = "failed by another worker: its heartbeats came later than the grace period (database unreachable?)"
Retry = Callable[[optuna.Study, dict], None]  # queue these params for a later trial


def storage_url(url: str | None = None) -> str | None:
    """The study database: `url` (--storage) if given, else $BLIPEXP_STORAGE, else None (a journal file in home)."""
    return url or os.environ.get(STORAGE_ENV) or None


def heartbeat_seconds() -> int:
    value = os.environ.get(HEARTBEAT_ENV, str(HEARTBEAT_SECONDS))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"${HEARTBEAT_ENV} must be a whole number of seconds >= 1, not {value!r}")
    return int(value)


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """Open (creating its tables if needed) the study database with heartbeats; ValueError naming the fix."""
    shown = _redacted(url)
    engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}} if _is_postgres(url) else {}
    interval = heartbeat_seconds()
    try:
        with _setup_lock(url), warnings.catch_warnings():  # parallel first starts would race to create tables
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since 2.x
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=interval,
                                              grace_period=GRACE_HEARTBEATS * interval)
    except ModuleNotFoundError as exc:
        raise ValueError(f"Optuna storage {shown} needs the database driver {exc.name!r}: "
                         "pip install 'blipexp[scale]'") from exc
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ValueError(f"Optuna storage {shown} cannot be opened ({type(exc).__name__}: {reason}): "
                         "check --storage / $BLIPEXP_STORAGE, that the database exists and the server is "
                         "reachable from this machine") from exc


def study_lock(study: optuna.Study, home: Path):
    """The lock around a study's once-only decisions: an advisory lock in its PostgreSQL database, else a
    file lock in home (one machine)."""
    url = _postgres_url(study)
    return advisory_lock(url, f"blipexp-study:{study.study_name}") if url else locks.hold(home, study.study_name)


@contextmanager
def advisory_lock(url: str, name: str) -> Iterator[None]:
    """PostgreSQL session advisory lock `name`, on a connection of its own: closing it (or its holder dying)
    releases the lock."""
    key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
    with _lock_engine(url).connect() as connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})


_engines: dict[str, sqlalchemy.Engine] = {}


def _lock_engine(url: str) -> sqlalchemy.Engine:
    if url not in _engines:  # NullPool: a closed connection really closes, so no lock outlives its `with`
        _engines[url] = sqlalchemy.create_engine(url, poolclass=NullPool,
                                                 connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    return _engines[url]


def _setup_lock(url: str):
    return advisory_lock(url, "blipexp-optuna-setup") if _is_postgres(url) else _no_lock()


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage behind `study` (for a database, the RDBStorage under Optuna's cache).

    The one place that reads Optuna internals: Optuna (4.x, 5.x) has no public accessor for either, and ask/tell
    trials need the storage to record heartbeats. tests/test_scaleout.py checks it still finds them."""
    storage = study._storage
    if isinstance(storage, optuna.storages._CachedStorage):
        storage = storage._backend
    return storage


def _rdb(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    storage = storage_of(study)
    return storage if isinstance(storage, optuna.storages.RDBStorage) else None


def trial_id(study: optuna.Study, number: int) -> int:
    """The storage's id of trial `number` (public storage methods only)."""
    storage = storage_of(study)
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def heartbeat_interval(study: optuna.Study) -> int | None:
    """Seconds between a running trial's heartbeats, or None: the study's storage records none (a journal file)."""
    storage = _rdb(study)
    return storage.get_heartbeat_interval() if storage is not None else None


def _postgres_url(study: optuna.Study) -> str | None:
    storage = _rdb(study)
    return storage.url if storage is not None and _is_postgres(storage.url) else None


def _is_postgres(url: str) -> bool:
    return sqlalchemy.engine.make_url(url).get_backend_name() == "postgresql"


def password_masked(url: str) -> str | None:
    """`url` with its password masked, or None if it has none (or is no URL): for printing a --storage value."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return None
    return parsed.render_as_string(hide_password=True) if parsed.password else None


def _redacted(url: str) -> str:
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError as exc:
        raise ValueError(f"--storage {url!r} is not a database URL (e.g. postgresql://user:password@host/db)") from exc


# --- heartbeats: a running trial says it is alive; a silent one is failed by whoever looks next


class TrialLost(Exception):
    """Another worker failed this running trial (its heartbeats came too late): stop it and keep nothing."""


class Pulse:
    """What the heartbeat thread learned about its trial: `check()` (at each safe point of training) raises
    TrialLost once the trial is no longer RUNNING in the storage."""

    def __init__(self) -> None:
        self.lost = threading.Event()

    def check(self) -> None:
        if self.lost.is_set():
            raise TrialLost(LOST_REASON)


def ask(study: optuna.Study) -> optuna.Trial:
    """study.ask(), with the trial's first heartbeat recorded at once (call under the study lock): a worker
    killed before its heartbeat thread starts still leaves a trial that goes stale."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        trial = study.ask()  # ask/tell drives our heartbeats (heartbeat()), not Study.optimize
    if heartbeat_interval(study):
        _rdb(study).record_heartbeat(trial_id(study, trial.number))
    return trial


def is_running(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether the trial is still RUNNING in the storage (no other worker failed it)."""
    return storage_of(study).get_trial(trial_id(study, trial.number)).state == TrialState.RUNNING


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[Pulse]:
    """Record the trial's heartbeat every interval while the body runs (a daemon thread); the Pulse yielded
    says when another worker failed the trial meanwhile (see the module docstring)."""
    pulse, interval = Pulse(), heartbeat_interval(study)
    if not interval:
        yield pulse
        return
    storage, stop, trial_key = _rdb(study), threading.Event(), trial_id(study, trial.number)

    def beat() -> None:
        while not stop.wait(interval):
            try:
                if storage.get_trial(trial_key).state != TrialState.RUNNING:
                    pulse.lost.set()  # failed behind our back (or just told by us: then nobody checks)
                    return
                storage.record_heartbeat(trial_key)
            except Exception as exc:  # a database hiccup: keep training, try again next interval
                warnings.warn(f"heartbeat of trial {trial.number} not recorded: {exc}", stacklevel=1)

    thread = threading.Thread(target=beat, name=f"heartbeat-trial-{trial.number}", daemon=True)
    thread.start()
    try:
        yield pulse
    finally:
        stop.set()
        thread.join()


def fail_stale_trials(study: optuna.Study, retry: Retry) -> int:
    """Fail the running trials whose heartbeat stopped (Optuna's fail_stale_trials) and retry their params;
    returns how many. Call under the study lock. Optuna fails them before a reason could be recorded on them:
    a FAIL trial without a fail_reason is one of these (sweep.reconcile_runs tags its run with STALE_REASON)."""
    if not heartbeat_interval(study):
        return 0
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # stable since 2.9
        optuna.storages.fail_stale_trials(study)
    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
             if t.number in running and "fail_reason" not in t.user_attrs]  # our own failures always say why
    for trial in stale:
        retry(study, trial.params or trial.system_attrs.get("fixed_params", {}))
    return len(stale)
