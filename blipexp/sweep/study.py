"""The study: where it is stored, the lock around its once-only decisions, its sampler and pruner (pruner.py,
paired.py), `suggest`.

On one machine the study is a journal file in the blipexp home and the lock a file lock there. Across machines
the study is in a database (PostgreSQL) that workers on any host join, and the lock is a PostgreSQL advisory
lock named after the study: every decision taken once (create the sweep run, start a trial while the total is
not reached, keep the best model, register) runs under it. The server drops it when its holder's connection
closes, so a SIGKILLed worker never leaves it held. A database study records heartbeats (recovery.py).

Optuna has no public accessor for a study's storage, which ask/tell heartbeats need: storage_of() is the one
place that reads Optuna's internals (pyproject.toml pins the tested major versions).

The URL comes from --storage or $BLIPEXP_STORAGE. Any SQLAlchemy URL opens; only PostgreSQL locks across
machines (others fall back to the home's file lock: one machine).
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
from optuna.trial import TrialState
from sqlalchemy.pool import NullPool

from ..experiment.search_space import Choice, FloatRange, IntRange, SearchDim
from ..experiment.spec import ExperimentSpec
from ..runtime import interrupts, locks, secrecy
from .paired import PairedPruner
from .pruner import ScheduleMedianPruner

FINAL_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # these count towards the total
JOURNAL = "optuna.journal"  # the study storage in the blipexp home

STORAGE_ENV = "BLIPEXP_STORAGE"
HEARTBEAT_ENV = "BLIPEXP_HEARTBEAT_SECONDS"
HEARTBEAT_SECONDS = 30  # a trial silent for GRACE_HEARTBEATS of these is taken for dead
GRACE_HEARTBEATS = 3
CONNECT_TIMEOUT_S = 10  # an unreachable database host fails in seconds, not after TCP's minutes


def optuna_storage(home: Path, url: str | None = None) -> optuna.storages.BaseStorage:
    """The study storage: `url` (an RDB such as PostgreSQL, for workers on several machines) if given, else a
    journal file in home. A journal file under Optuna's lock takes parallel workers on one machine, which
    SQLite does not (\"database is locked\")."""
    if url:
        return rdb_storage(url)
    home.mkdir(parents=True, exist_ok=True)
    path = str(home / JOURNAL)
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def study_name(spec: ExperimentSpec) -> str:
    return f"{spec.name}-tiny" if spec.is_tiny else spec.name


def suggest(trial: optuna.Trial, key: str, dim: SearchDim):
    if isinstance(dim, FloatRange):
        return trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    if isinstance(dim, IntRange):
        return trial.suggest_int(key, dim.low, dim.high, step=dim.step)
    assert isinstance(dim, Choice), f"unknown search dimension {dim!r}"
    return trial.suggest_categorical(key, list(dim.options))


def open_study(spec: ExperimentSpec, home: Path, new: bool = False,
               storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    name, storage = study_name(spec), storage or optuna_storage(home)
    if new and name in optuna.get_all_study_names(storage=storage):
        optuna.delete_study(study_name=name, storage=storage)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created": the sweep's own line says more
    try:
        return optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler(spec, 0),
            pruner=pruner(spec),
            direction=spec.direction,
            load_if_exists=True,  # a parallel worker may create it first
        )
    finally:
        optuna.logging.set_verbosity(verbosity)


def pruner(spec: ExperimentSpec) -> optuna.pruners.BasePruner:
    """The spec's pruner: none (prune=false), the paired test or the median rule (pruner, auto resolved)."""
    if not spec.prune:
        return optuna.pruners.NopPruner()
    if spec.pruner_used == "paired":
        return PairedPruner(spec.epochs, spec.objective_metric, spec.prune_alpha, spec.seed)
    return ScheduleMedianPruner(spec.epochs)


def sampler(spec: ExperimentSpec, n_trials_so_far: int) -> optuna.samplers.BaseSampler:
    """Seeded TPE, reseeded for each new trial by its position in the study: parallel workers (and a resumed run)
    would otherwise draw the same parameters from the same seed. Still one fixed sequence per study."""
    return optuna.samplers.TPESampler(seed=spec.seed + n_trials_so_far, n_startup_trials=4)


def counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINAL_STATES))


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def top_trials(study: optuna.Study, count: int) -> list[optuna.trial.FrozenTrial]:
    """The `count` best complete trials, best first (ties in trial order)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(complete, key=lambda t: -t.value if maximize else t.value)[:count]


# --- a database study, shared by workers on several machines


def storage_url(url: str | None = None) -> str | None:
    """The study database: `url` (--storage) if given, else $BLIPEXP_STORAGE, else None (a journal file in home)."""
    return url or os.environ.get(STORAGE_ENV) or None


def heartbeat_seconds() -> int:
    value = os.environ.get(HEARTBEAT_ENV, str(HEARTBEAT_SECONDS))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"${HEARTBEAT_ENV} must be a whole number of seconds >= 1, not {value!r}")
    return int(value)


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """Open (creating its tables if needed) the study database with heartbeats; ValueError naming the fix (the URL
    shown with its password masked)."""
    shown = secrecy.masked(url)
    _check_url(url)
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
        reason = secrecy.scrubbed(str(getattr(exc, "orig", None) or exc).strip().splitlines()[0], url)
        raise ValueError(f"Optuna storage {shown} cannot be opened ({type(exc).__name__}: {reason}): "
                         "check --storage / $BLIPEXP_STORAGE, that the database exists and the server is "
                         "reachable from this machine") from exc


@contextmanager
def study_lock(study: optuna.Study, home: Path) -> Iterator[None]:
    """The lock around a study's once-only decisions: an advisory lock in its PostgreSQL database, else a
    file lock in home (one machine). Ctrl-C and SIGTERM never cut a decision in two: a stop asked while the lock
    is held waits for its release (interrupts.held)."""
    url = _postgres_url(study)
    lock = advisory_lock(url, f"blipexp-study:{study.study_name}") if url else locks.hold(home, study.study_name)
    with lock, interrupts.held():
        yield


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


def rdb(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    storage = storage_of(study)
    return storage if isinstance(storage, optuna.storages.RDBStorage) else None


def trial_id(study: optuna.Study, number: int) -> int:
    """The storage's id of trial `number` (public storage methods only)."""
    storage = storage_of(study)
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def heartbeat_interval(study: optuna.Study) -> int | None:
    """Seconds between a running trial's heartbeats, or None: the study's storage records none (a journal file)."""
    storage = rdb(study)
    return storage.get_heartbeat_interval() if storage is not None else None


def _postgres_url(study: optuna.Study) -> str | None:
    storage = rdb(study)
    return storage.url if storage is not None and _is_postgres(storage.url) else None


def _is_postgres(url: str) -> bool:
    return sqlalchemy.engine.make_url(url).get_backend_name() == "postgresql"


def _check_url(url: str) -> None:
    try:
        sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError as exc:
        raise ValueError(f"--storage {secrecy.masked(url)!r} is not a database URL (e.g. postgresql://user@host/db; "
                         f"a password goes in ~/.pgpass, or the whole URL in ${STORAGE_ENV})") from exc
