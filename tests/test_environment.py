"""The environment a run records, how two of them differ, and the checkout's state (a real git repository)."""
from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest

from blipexp import environment


def test_the_environment_names_python_the_packages_the_checkout_and_the_device():
    now = environment.current("fp32")
    assert set(now["packages"]) == set(environment.PACKAGES)
    assert now["packages"]["torch"] == __import__("torch").__version__
    assert now["packages"]["transformers"] == __import__("transformers").__version__
    assert now["device"]["cores"] >= 1 and now["device"]["torch_threads"] >= 1
    assert now["precision_used"] == "fp32"
    params = environment.params(now)
    assert params["env_transformers"] == now["packages"]["transformers"]
    assert {"env_python", "env_torch", "env_blipexp_commit", "env_dirty", "env_device", "env_torch_threads"} <= set(params)


def test_differences_name_each_change_and_none_when_equal():
    now = environment.current("fp32")
    assert environment.differences(now, copy.deepcopy(now)) == []
    older = copy.deepcopy(now)
    older["packages"]["transformers"] = "4.99.0"
    older["blipexp"] = {"commit": "0000000", "dirty": True, "diff_sha256": "ab"}
    older["device"]["torch_threads"] = now["device"]["torch_threads"] + 6
    older["device"]["cpu_flags"] = [*now["device"]["cpu_flags"], "amx_tile"]
    older["precision_used"] = "bf16"
    lines = environment.differences(older, now)
    assert f"transformers: 4.99.0 recorded, {now['packages']['transformers']} now" in lines
    assert f"blipexp commit: 0000000 recorded, {now['blipexp']['commit']} now" in lines
    assert any(line.startswith("uncommitted changes: yes (diff ab) recorded") for line in lines)
    assert f"torch threads: {now['device']['torch_threads'] + 6} recorded, {now['device']['torch_threads']} now" in lines
    assert "cpu flags: amx_tile recorded only, none now only" in lines
    assert "precision: bf16 recorded, fp32 now" in lines


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=folder, check=True,
                   capture_output=True)


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """A git repository holding a package like blipexp's (its __init__.py tracked), which environment reads."""
    package = tmp_path / "repo" / "blipexp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "train.py").write_text("LR = 1\n")
    git(tmp_path / "repo", "init", "-q")
    git(tmp_path / "repo", "add", ".")
    git(tmp_path / "repo", "commit", "-q", "-m", "first")
    monkeypatch.setattr(environment, "PACKAGE_DIR", package)
    return package


def test_a_clean_checkout_is_not_dirty_and_has_no_diff(checkout):
    state = environment.checkout()
    assert state.commit != "unknown" and state.dirty is False and state.diff == ""


def test_a_dirty_checkout_gives_its_diff_with_the_untracked_files(checkout):
    (checkout / "train.py").write_text("LR = 2\n")
    (checkout / "new_module.py").write_text("X = 3\n")
    state = environment.checkout()
    assert state.dirty is True
    assert "-LR = 1\n+LR = 2" in state.diff
    assert "+++ b/blipexp/new_module.py" in state.diff and "+X = 3" in state.diff


def test_a_copy_of_blipexp_inside_another_repository_is_no_checkout(checkout):
    (checkout / "__init__.py").unlink()
    git(checkout.parent, "rm", "-q", "--cached", "blipexp/__init__.py")
    (checkout / "__init__.py").write_text("")  # untracked: an installed copy, not the repository's own files
    assert environment.checkout() == environment.Checkout("unknown", None, "")
