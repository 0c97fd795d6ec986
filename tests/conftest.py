"""Shared fixtures: every test runs offline, with its own blipexp home (MLflow store, data) in a temp dir."""
from __future__ import annotations

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


def pytest_configure(config: pytest.Config) -> None:
    """Name the shared folder of the pretrained tiny model before test modules are imported: some build their
    child processes' environment at import time, and a child without it would pretrain on its own (minutes).
    The folder is in pytest's cache, so later sessions reuse the build until its recipe changes."""
    from blipexp import pretrain

    cache = getattr(config, "cache", None)  # None under `-p no:cacheprovider`
    shared = cache.mkdir("blipexp-pretrained") if cache else Path(tempfile.mkdtemp(prefix="blipexp-pretrained-"))
    os.environ[pretrain.CACHE_VARIABLE] = str(shared)


@pytest.fixture(scope="session", autouse=True)
def pretrained_tiny_cache() -> Path:
    """The pretrained tiny model ("tiny"), built once and shared by every test's home, child processes included
    (through BLIPEXP_PRETRAINED_CACHE), so no test pays for pretraining; tests of the cache itself unset it."""
    from blipexp import pretrain

    shared = Path(os.environ[pretrain.CACHE_VARIABLE])
    pretrain.pretrained_tiny(shared)
    return shared


@pytest.fixture(scope="session")
def precision_probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """precision=auto's probe of the tiny model's shapes, run once per session (seconds) and copied into every
    test's home, where each run would otherwise probe again."""
    from blipexp import precision
    from blipexp.tiny import build_tiny_model, build_tiny_processor

    probed = tmp_path_factory.mktemp("precision")
    precision.cached_probe(probed, precision.model_shapes(build_tiny_model(build_tiny_processor(["a"]), seed=0)))
    return probed / "cache" / "precision.json"


@pytest.fixture
def home(tmp_path: Path, precision_probe: Path) -> Path:
    path = tmp_path / "home"
    (path / "cache").mkdir(parents=True)
    shutil.copy(precision_probe, path / "cache" / "precision.json")
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
