"""The environment a run records, how two of them differ, and the checkout's state (a real git repository)."""
from __future__ import annotations

import copy
import hashlib
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

from blipexp.runtime import environment


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
    """A git repository holding a package like blipexp's (its __init__.py tracked) and an experiments folder, which
    environment reads."""
    package = make_checkout(tmp_path / "repo")
    monkeypatch.setattr(environment, "PACKAGE_DIR", package)
    return package


def make_checkout(repo: Path) -> Path:
    """A committed repository like blipexp's: its package (returned), an experiments folder and a text file."""
    package, experiments = repo / "blipexp", repo / "experiments"
    package.mkdir(parents=True)
    experiments.mkdir()
    (package / "__init__.py").write_text("")
    (package / "train.py").write_text("LR = 1\n")
    (package / "old.py").write_text("GONE = 1\n")
    (experiments / "base.py").write_text("EPOCHS = 1\n")
    (repo / "notes.txt").write_text("first\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    return package


def test_a_clean_checkout_is_not_dirty_and_has_no_diff(checkout):
    state = environment.checkout()
    assert state.commit != "unknown" and state.dirty is False and state.diff == ""


def test_a_dirty_checkouts_code_is_recorded_as_a_diff_that_recreates_it_and_other_files_by_name(checkout, tmp_path):
    repo = checkout.parent
    code = {"blipexp/train.py": "LR = 2\n", "blipexp/new_module.py": "X = 3\n\x0cY = 4\r\nZ = 5",  # no end newline
            "blipexp/sub/empty.py": "", "experiments/new_experiment.py": "EPOCHS = 2\n"}
    for name, text in code.items():
        (repo / name).parent.mkdir(exist_ok=True)
        (repo / name).write_bytes(text.encode())
    (checkout / "old.py").unlink()
    (repo / "notes.txt").write_text("second\n")  # tracked, not code: named
    (repo / "data.csv").write_text("a,b\n")  # untracked, not code: named
    (repo / "tools").mkdir()
    (repo / "tools" / "helper.py").write_text("H = 1\n")  # .py outside the package and experiments: named
    state = environment.checkout()
    assert state.dirty is True
    # the diff applied to a fresh clone of the commit gives the working copy's code, byte for byte
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    subprocess.run(["git", "apply", "-"], input=state.diff.encode(), cwd=clone, check=True, capture_output=True)
    for name, text in code.items():
        assert (clone / name).read_bytes() == text.encode(), name
    assert not (clone / "blipexp" / "old.py").exists()
    assert (clone / "notes.txt").read_text() == "first\n"
    assert not (clone / "data.csv").exists() and not (clone / "tools").exists()
    for name in ("notes.txt", "data.csv", "tools/helper.py"):
        data = (repo / name).read_bytes()
        assert f"# not copied: {name} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()})\n" in state.diff
    assert "second" not in state.diff and "a,b" not in state.diff and "H = 1" not in state.diff


SECRET = "s3cr3t-planted-value"
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----"


@pytest.mark.parametrize("name, text", [
    ("credentials/bob.credentials", f"[mlflow]\nmlflow_tracking_password = {SECRET}\n"),
    ("blipexp/credentials.py", f"WHO = '{SECRET}'\n"),  # code, but named like a secret
    (".env", f"X={SECRET}\n"),
    (".env.local", f"X={SECRET}\n"),
    ("experiments/server.pem", f"{SECRET}\n"),
    ("blipexp/tls.key", f"{SECRET}\n"),
    (".pgpass", f"db:5432:*:blip:{SECRET}\n"),
    ("id_ed25519", f"{SECRET}\n"),
    (".netrc", f"machine h login u password {SECRET}\n"),
    ("experiments/keyed.py", f'KEY = """{PRIVATE_KEY}\n{SECRET}\n"""\n'),
    ("blipexp/hub.py", f"hub_token = '{SECRET}'\n"),
    ("blipexp/db.py", f'SETTINGS = {{"password": "{SECRET}"}}\n'),
    ("experiments/remote.py", f"DB_PASSWORD={SECRET}\n"),
    ("blipexp/train.py", f"LR = 1\napi_secret: str = '{SECRET}'\n"),  # a tracked file's change: the same rule
])
def test_no_file_that_looks_like_a_secret_or_holds_one_is_copied(checkout, name, text):
    """Not one byte of the file's text, ignored by git or not (this checkout has no .gitignore): it is named, with
    its size; code without a secret beside it is still copied."""
    path = checkout.parent / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    (checkout / "new_module.py").write_text("X = 3\n")
    state = environment.checkout()
    assert SECRET not in state.diff
    assert f"# not copied: {name} ({len(text.encode())} bytes, sha256 " in state.diff
    assert "+++ b/blipexp/new_module.py\n@@ -0,0 +1,1 @@\n+X = 3\n" in state.diff


def test_a_tracked_file_named_like_a_secret_is_not_copied_when_it_changes(checkout):
    repo = checkout.parent
    (repo / "deploy.env").write_text("HOST=a\n")
    git(repo, "add", "deploy.env")
    git(repo, "commit", "-q", "-m", "env")
    (repo / "deploy.env").write_text(f"HOST={SECRET}\n")
    diff = environment.checkout().diff
    assert SECRET not in diff and "# not copied: deploy.env (" in diff


def test_the_credentials_folder_is_ignored_by_git():
    """README's secured stack writes credentials/NAME.credentials in the checkout; git keeps them out of commits
    (uncommitted.diff would name them without copying them either way)."""
    done = subprocess.run(["git", "check-ignore", "-q", "credentials/bob.credentials"], cwd=REPO)
    assert done.returncode == 0


def test_a_copy_of_blipexp_inside_another_repository_is_no_checkout(checkout):
    (checkout / "__init__.py").unlink()
    git(checkout.parent, "rm", "-q", "--cached", "blipexp/__init__.py")
    (checkout / "__init__.py").write_text("")  # untracked: an installed copy, not the repository's own files
    assert environment.checkout() == environment.Checkout("unknown", None, "")
