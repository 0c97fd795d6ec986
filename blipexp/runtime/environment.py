"""The environment a run trains in: Python and the versions of the packages that decide its numbers, blipexp's
commit and whether its checkout had uncommitted changes, the CPU and GPU, torch's threads, the precision used.

Every training run logs it (training/records.py: artifact environment.json, a few `env_*` params, and the checkout's
changes as uncommitted.diff when it was dirty: the diff of its code, any other file by name, size and sha256, never a
secret); `rerun` reads it back and prints how the machine it runs on differs (`differences`) before it trains.
This module reads the machine; tracking.Run writes what it found.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import secrecy

VERSION = 1  # of environment.json's layout
ARTIFACT = "environment.json"
DIFF_ARTIFACT = "uncommitted.diff"
# the packages whose versions decide a run's numbers (and blipexp's own), as their distributions are named
PACKAGES = ("torch", "transformers", "accelerate", "datasets", "mlflow", "optuna", "peft", "evaluate", "pycocoevalcap",
            "blipexp")
PARAM_PACKAGES = ("torch", "transformers")  # also logged as params (env_torch, ...): the run table's columns
UNTRACKED_DIFF_MAX_BYTES = 256 * 1024  # an untracked file larger than this is named in the diff, not copied
EXPERIMENTS_DIR = "experiments"  # the checkout's experiments folder: its .py files are copied into the diff
PACKAGE_DIR = Path(__file__).resolve().parent.parent
GIT_TIMEOUT_S = 10


@dataclass(frozen=True)
class Checkout:
    """blipexp's git checkout: the commit, whether files differ from it, and how."""

    commit: str  # short hash; "unknown" when blipexp is not run from a git checkout
    dirty: bool | None  # None: unknown (no checkout)
    diff: str  # changed and untracked files: code as its diff, others by name (_changes); empty when clean


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, cwd=PACKAGE_DIR)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def checkout() -> Checkout:
    """The checkout blipexp runs from. An installed copy inside another repository (a venv in a clone) is no
    checkout of blipexp: its own files must be tracked there."""
    commit = (_git("rev-parse", "--short", "HEAD") or "").strip()
    if not commit or _git("ls-files", "--error-unmatch", "__init__.py") is None:
        return Checkout("unknown", None, "")
    status = _git("status", "--porcelain")
    if status is None:
        return Checkout(commit, None, "")
    return Checkout(commit, bool(status.strip()), _changes() if status.strip() else "")


def git_commit() -> str:
    """The short commit of blipexp's checkout, or "unknown"."""
    return (_git("rev-parse", "--short", "HEAD") or "").strip() or "unknown"


def _changes() -> str:
    """Every file that differs from the commit, tracked then untracked (not ignored): code a rerun needs as the diff
    that makes it, holding no secret; any other file by name, size and sha256. Ignored by git or not: the same rule."""
    top = Path((_git("rev-parse", "--show-toplevel") or "").strip() or PACKAGE_DIR).resolve()
    parts = []
    for name in _names("diff", "HEAD", "--no-renames", "--name-only"):
        diff = _git("diff", "HEAD", "--no-renames", "--", f":(top,literal){name}") if _is_code(top, name) else None
        parts.append(diff if diff and not secrecy.holds_secret(diff) else _named(top, name))
    for name in _names("ls-files", "--others", "--exclude-standard", "--full-name", ":/"):
        diff = _new_file_diff(top, name) if _is_code(top, name) else None
        parts.append(diff if diff and not secrecy.holds_secret(diff) else _named(top, name))
    return "".join(parts)


def _names(*args: str) -> list[str]:
    """The file names (relative to the checkout's top) a git command lists."""
    return [name for name in (_git(*args, "-z") or "").split("\0") if name]


def _is_code(top: Path, name: str) -> bool:
    """Whether file `name` is code a rerun needs: a .py of the package or the experiments folder, not named like a
    secret."""
    package = PACKAGE_DIR.resolve()
    folders = [Path(EXPERIMENTS_DIR), *([package.relative_to(top)] if package.is_relative_to(top) else [])]
    in_folder = any(folder in Path(name).parents for folder in folders)
    return name.endswith(".py") and in_folder and not secrecy.secret_file(name)


def _named(top: Path, name: str) -> str:
    """One line naming a file whose content is not copied: its size and sha256, or that it was deleted."""
    path = top / name
    if not path.is_file():
        return f"# not copied: {name} (deleted)\n"
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return f"# not copied: {name} ({path.stat().st_size} bytes, sha256 {digest.hexdigest()})\n"


def _new_file_diff(top: Path, name: str) -> str | None:
    """An untracked file as the diff that creates it; None when it is binary or over UNTRACKED_DIFF_MAX_BYTES."""
    path = top / name
    try:
        text = path.read_bytes().decode() if path.stat().st_size <= UNTRACKED_DIFF_MAX_BYTES else None
    except (OSError, UnicodeDecodeError):
        return None
    if text is None:
        return None
    header = f"diff --git a/{name} b/{name}\nnew file mode 100644\n"
    lines = text.split("\n")  # git's lines: \r, form feeds and the like stay inside theirs
    last = lines.pop()  # "" when the text ends with a newline
    body = "".join(f"+{line}\n" for line in lines) + (f"+{last}\n\\ No newline at end of file\n" if last else "")
    count = len(lines) + bool(last)
    return f"{header}--- /dev/null\n+++ b/{name}\n@@ -0,0 +1,{count} @@\n{body}" if count else header


def cpu() -> tuple[str, list[str]]:
    """The CPU's model name and its feature flags (sorted), from /proc/cpuinfo where there is one."""
    name, flags = platform.processor(), ""
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name":
            name = value
        elif key in ("flags", "Features"):  # x86, ARM
            flags = value
        if name and flags:
            break
    return name, sorted(set(flags.split()))


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under a job scheduler), at least 1."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def current(precision_used: str | None = None, git: Checkout | None = None) -> dict[str, Any]:
    """This process's environment as environment.json holds it; `precision_used`: what the run trains in."""
    import torch

    git = git or checkout()
    name, flags = cpu()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {
        "version": VERSION,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "blipexp": {"commit": git.commit, "dirty": git.dirty,
                    "diff_sha256": hashlib.sha256(git.diff.encode()).hexdigest()[:16] if git.diff else None},
        "device": {"cpu": name, "cpu_flags": flags, "cores": available_cores(), "torch_threads": torch.get_num_threads(),
                   "gpu": torch.cuda.get_device_name(0) if gpus else None, "gpu_count": gpus,
                   "cuda": torch.version.cuda},
        "precision_used": precision_used,
    }


def device_text(environment: dict[str, Any]) -> str:
    """'cpu: <model>, 2 cores' or 'cuda 12.4: 4 x <GPU>'."""
    device = environment["device"]
    if device.get("gpu_count"):
        return f"cuda {device.get('cuda')}: {device['gpu_count']} x {device.get('gpu')}"
    return f"cpu: {device.get('cpu') or 'unknown'}, {device.get('cores')} cores"


def params(environment: dict[str, Any]) -> dict[str, Any]:
    """The few params a run's table shows: Python, the key packages, the commit and dirty flag, device, threads."""
    return {"env_python": environment["python"],
            **{f"env_{name}": environment["packages"].get(name) for name in PARAM_PACKAGES},
            "env_blipexp_commit": environment["blipexp"]["commit"],
            "env_dirty": environment["blipexp"]["dirty"],
            "env_device": device_text(environment),
            "env_torch_threads": environment["device"]["torch_threads"]}


FLAG_NAMES_SHOWN = 8  # a CPU flag difference lists at most this many flags each way


def differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """One line per way `now` differs from `recorded`: packages, Python, commit, dirty checkout, device, threads,
    precision. Empty when they match."""
    lines = []

    def differ(what: str, before: Any, after: Any) -> None:
        if before != after:
            lines.append(f"{what}: {_shown(before)} recorded, {_shown(after)} now")

    differ("python", recorded.get("python"), now.get("python"))
    before, after = recorded.get("packages", {}), now.get("packages", {})
    for name in [*PACKAGES, *sorted((set(before) | set(after)) - set(PACKAGES))]:
        differ(name, before.get(name), after.get(name))
    git_before, git_after = recorded.get("blipexp", {}), now.get("blipexp", {})
    differ("blipexp commit", git_before.get("commit"), git_after.get("commit"))
    if git_before.get("dirty") != git_after.get("dirty") or git_before.get("diff_sha256") != git_after.get("diff_sha256"):
        lines.append(f"uncommitted changes: {_dirty(git_before)} recorded, {_dirty(git_after)} now")
    device_before, device_after = recorded.get("device", {}), now.get("device", {})
    for key, what in (("cpu", "cpu"), ("cores", "cores"), ("torch_threads", "torch threads"), ("gpu", "gpu"),
                      ("gpu_count", "gpu count"), ("cuda", "cuda")):
        differ(what, device_before.get(key), device_after.get(key))
    flags_before, flags_after = set(device_before.get("cpu_flags", [])), set(device_after.get("cpu_flags", []))
    if flags_before != flags_after:
        lines.append(f"cpu flags: {_flags(flags_before - flags_after)} recorded only, "
                     f"{_flags(flags_after - flags_before)} now only")
    differ("precision", recorded.get("precision_used"), now.get("precision_used"))
    return lines


def _shown(value: Any) -> str:
    return "none" if value is None else str(value)


def _dirty(git: dict[str, Any]) -> str:
    if git.get("dirty") is None:
        return "unknown (no git checkout)"
    return f"yes (diff {git.get('diff_sha256')})" if git.get("dirty") else "none"


def _flags(flags: set[str]) -> str:
    names = sorted(flags)
    if not names:
        return "none"
    more = len(names) - FLAG_NAMES_SHOWN
    return " ".join(names[:FLAG_NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")

