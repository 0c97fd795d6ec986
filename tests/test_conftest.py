"""The shared test helpers: a missing tool skips a test with what to install, and fails it under CI; the order
files start in."""
from __future__ import annotations

import os
import sys

import pytest
from conftest import require_tool

MISSING = "blipexp-no-such-tool"


def test_a_tool_on_path_or_in_a_named_place_is_found():
    assert os.path.basename(require_tool("sh", "apt-get install dash")) == "sh"
    assert require_tool(MISSING, "nothing", also=["/no/such/file", sys.executable]) == sys.executable


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_a_missing_tool_skips_outside_ci(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=f"^{MISSING} not installed: apt-get install it, or set CI=true"):
        require_tool(MISSING, "apt-get install it")


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_missing_tool_fails_under_ci(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=f"^{MISSING} is required under CI=true but not installed: apt"):
        require_tool(MISSING, "apt-get install it")


def test_each_home_holds_its_own_copy_of_a_store_mlflow_opens_as_made(home, new_home, empty_store):
    """The session's empty store, copied: a run written in one home is in no other home, nor in the original."""
    import mlflow

    def client(folder):
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)

    def experiments(folder):
        return {e.name for e in client(folder).search_experiments()}

    other = new_home("other")
    client(home).create_experiment("written-here")
    assert experiments(home) == {"Default", "written-here"}
    assert experiments(other) == {"Default"}, "a copy, not the same file"
    assert experiments(empty_store.parent) == {"Default"}


def test_the_longest_files_start_first_and_a_new_file_before_them():
    from conftest import REPO, file_seconds, longest_files_first

    ids = ["tests/test_a.py::one", "tests/test_a.py::two", "tests/test_b.py::one", "tests/test_new.py::one",
           "tests/test_b.py::two"]
    assert longest_files_first(ids, {"tests/test_a.py": 1.0, "tests/test_b.py": 30.0}) == [
        "tests/test_new.py::one", "tests/test_b.py::one", "tests/test_b.py::two", "tests/test_a.py::one",
        "tests/test_a.py::two"]
    assert all((REPO / name).is_file() for name in file_seconds()), "a file that is gone"


def test_the_controller_names_the_pretrained_cache_without_importing_torch(tmp_path):
    """The xdist controller runs pytest_configure alone before any worker starts: importing torch and transformers
    there (blipexp.model.pretrain, ~7 s) would hold every worker back. The name it sets is the one pretrain reads."""
    import subprocess

    from blipexp.model import pretrain
    from conftest import PRETRAINED_CACHE_VARIABLE

    assert PRETRAINED_CACHE_VARIABLE == pretrain.CACHE_VARIABLE
    code = ("import sys, types, conftest; conftest.name_the_pretrained_cache(types.SimpleNamespace(cache=None)); "
            "import os; print(os.environ[conftest.PRETRAINED_CACHE_VARIABLE]); "
            "print(sorted({'torch', 'transformers', 'mlflow'} & set(sys.modules)))")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_XDIST_WORKER", PRETRAINED_CACHE_VARIABLE)}
    done = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(__file__), env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    named, imported = done.stdout.splitlines()
    assert "blipexp-pretrained" in named and imported == "[]", done.stdout
