"""Shared fixtures: every test runs offline, with its own blipexp home (MLflow store, data) in a temp dir."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = REPO / "experiments"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject's addopts): a worker per core this process may use, at most MAX_WORKERS (each worker
    holds torch, transformers and MLflow, and its tests start servers and training processes of their own)."""
    from blipexp.runtime.environment import available_cores

    return min(available_cores(), MAX_WORKERS)


MAX_WORKERS = 4


def pytest_configure(config: pytest.Config) -> None:
    share_cores_among_workers()
    name_the_pretrained_cache(config)


# --- the longest files first: a worker takes a file at a time (--dist loadfile), so a long file taken last runs alone
# while the other workers idle. FILE_SECONDS holds each file's seconds as measured (setup, call and teardown of its
# tests); `pytest --update-file-seconds` updates it. The order changes how long the suite takes, never what
# a test sees: every file's module fixtures are its own, and a file missing from it (a new one) goes first.

FILE_SECONDS = Path(__file__).with_name("file_seconds.json")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-file-seconds", action="store_true",
                     help=f"update {FILE_SECONDS.name} with each file's seconds in this run: files start longest first")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items[:] = longest_files_first(items, file_seconds(), key=lambda item: item.nodeid)


def file_seconds() -> dict[str, float]:
    return json.loads(FILE_SECONDS.read_text()) if FILE_SECONDS.is_file() else {}


def longest_files_first(items: list, seconds: dict[str, float], key=lambda nodeid: nodeid) -> list:
    """`items` (test ids, or what `key` maps to one) with the files of most `seconds` first, a file missing from
    `seconds` before all; a file's tests stay together and in their order."""
    return sorted(items, key=lambda item: -seconds.get(_file_of(key(item)), float("inf")))


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


_measured: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _measured[_file_of(report.nodeid)] = _measured.get(_file_of(report.nodeid), 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    """--update-file-seconds: the files this run measured replace their entries; files that are gone are dropped."""
    if session.config.getoption("update_file_seconds") and not os.environ.get("PYTEST_XDIST_WORKER"):
        merged = {**file_seconds(), **{name: round(seconds, 1) for name, seconds in _measured.items()}}
        kept = {name: seconds for name, seconds in merged.items() if (REPO / name).is_file()}
        FILE_SECONDS.write_text(json.dumps(dict(sorted(kept.items(), key=lambda kv: -kv[1])), indent=0) + "\n")


def share_cores_among_workers() -> None:
    """Under xdist, each worker's torch (and every process it starts: the variables are inherited) uses its share of
    the cores, so that workers do not fight over them: two workers of two threads each on two cores run slower than
    two of one thread (the threads spin-wait for each other). Set before torch is imported."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return
    from blipexp.runtime.environment import available_cores

    threads = str(max(1, available_cores() // workers))
    for name in THREAD_VARIABLES:
        os.environ[name] = threads


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def name_the_pretrained_cache(config: pytest.Config) -> None:
    """Name the shared folder of the pretrained tiny model before test modules are imported: some build their
    child processes' environment at import time, and a child without it would pretrain on its own (minutes).
    The folder is in pytest's cache, so later sessions reuse the build until its recipe changes. The variable's
    name is spelled here, not imported: blipexp.model.pretrain imports torch and transformers (~7 s), which the
    xdist controller would import alone, before any worker starts (test_conftest.py checks the name)."""
    if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(PRETRAINED_CACHE_VARIABLE):
        return  # an xdist worker: the folder its controller named (inherited), so that all workers share one build
    cache = getattr(config, "cache", None)  # None under `-p no:cacheprovider`
    shared = cache.mkdir("blipexp-pretrained") if cache else Path(tempfile.mkdtemp(prefix="blipexp-pretrained-"))
    os.environ[PRETRAINED_CACHE_VARIABLE] = str(shared)


PRETRAINED_CACHE_VARIABLE = "BLIPEXP_PRETRAINED_CACHE"  # blipexp.model.pretrain.CACHE_VARIABLE


@pytest.fixture(scope="session", autouse=True)
def pretrained_tiny_cache() -> Path:
    """The pretrained tiny model ("tiny"), built once and shared by every test's home and every xdist worker, child
    processes included (through BLIPEXP_PRETRAINED_CACHE), so no test pays for pretraining; tests of the cache
    itself unset it. One worker builds it under the cache's lock with every core (the others wait on that lock)."""
    import torch

    from blipexp.model import pretrain
    from blipexp.runtime.environment import available_cores

    shared = Path(os.environ[pretrain.CACHE_VARIABLE])
    threads = torch.get_num_threads()
    torch.set_num_threads(available_cores())
    try:
        pretrain.pretrained_tiny(shared)
    finally:
        torch.set_num_threads(threads)
    return shared


@pytest.fixture(scope="session")
def precision_probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """precision=auto's probe of the tiny model's shapes, run once per session (seconds) and copied into every
    test's home, where each run would otherwise probe again."""
    from blipexp.model import precision
    from blipexp.model.tiny import build_tiny_model, build_tiny_processor

    probed = tmp_path_factory.mktemp("precision")
    precision.cached_probe(probed, precision.model_shapes(build_tiny_model(build_tiny_processor(["a"]), seed=0)))
    return probed / "cache" / "precision.json"


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new home's MLflow store (`<home>/mlflow.db`, sqlite) with its tables made, once per session: MLflow's
    migrations take seconds for each new store, and every test that tracks a run would pay them. A copy is the store
    tracking.configure would create (the real sqlite store, opened and written by MLflow as a user's is)."""
    import mlflow

    made = tmp_path_factory.mktemp("store") / "mlflow.db"
    uri = f"sqlite:///{made}"
    mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
    return made


@pytest.fixture
def home(tmp_path: Path, precision_probe: Path, empty_store: Path) -> Path:
    return make_home(tmp_path / "home", precision_probe, empty_store)


@pytest.fixture(scope="session")
def new_home(tmp_path_factory: pytest.TempPathFactory, precision_probe: Path, empty_store: Path):
    """`new_home(name)`: a fresh home, as `home` gives one test, for a fixture that several tests share."""
    return lambda name="home": make_home(tmp_path_factory.mktemp(name), precision_probe, empty_store)


def make_home(path: Path, precision_probe: Path, empty_store: Path) -> Path:
    """A blipexp home as a user's first run leaves it before training: the precision probe made, the empty store."""
    (path / "cache").mkdir(parents=True, exist_ok=True)
    shutil.copy(precision_probe, path / "cache" / "precision.json")
    shutil.copy(empty_store, path / "mlflow.db")
    return path


def in_ci() -> bool:
    """True under CI (CI=true, as CI services set it): there every test must run, none may skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_tool(name: str, install: str, also: Iterable[str] = ()) -> str:
    """The path of executable `name` (on PATH, else the first executable of `also`). When it is missing, the
    test skips with one line saying what to install, or fails under CI, where a skipped test would hide a gap."""
    found = shutil.which(name) or next((path for path in also if os.access(path, os.X_OK)), None)
    if found:
        return found
    if in_ci():
        pytest.fail(f"{name} is required under CI=true but not installed: {install} (.ci/run does it)")
    pytest.skip(f"{name} not installed: {install}, or set CI=true to make this a failure")
