"""Scored splits kept on disk, so a model is never captioned twice on the same images: a training run leaves its
final validation and test scores here, and `evaluate`, `compare` and `promote` read them back in a second.

An entry is keyed by what decides its numbers: the model folder's content (weights, config, processor: its
digest), the data's fingerprint, the split, the generation settings and how CIDEr's idf is taken. Entries live in
`<home>/cache/evaluations/<key>.json`; delete the folder to reclaim the space.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

VERSION = 1  # bump when scoring changes: entries of another version are not read
# How the model was made, not what it computes: the model card, and the Trainer's arguments (its run's own paths)
SKIPPED_FILES = ("README.md", "training_args.bin")


def weights_digest(folder: Path) -> str:
    """sha256 over the files of a model folder (model, config, processor), by name: equal digests, equal captions."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name not in SKIPPED_FILES):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(2**20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def key(weights: str, fingerprint: str, split: str, generation: dict[str, Any], cider_df: str) -> str:
    payload = [VERSION, weights, fingerprint, split, dict(sorted(generation.items())), cider_df]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _path(home: Path, entry: str) -> Path:
    return home / "cache" / "evaluations" / f"{entry}.json"


def read(home: Path, entry: str) -> dict[str, Any] | None:
    """The stored entry, or None (never stored, or unreadable: it is then scored again and rewritten)."""
    try:
        return json.loads(_path(home, entry).read_text())
    except (OSError, ValueError):
        return None


def write(home: Path, entry: str, value: dict[str, Any]) -> None:
    """Store an entry whole or not at all: written beside, then renamed (parallel workers may write the same one)."""
    path = _path(home, entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(value, handle)
    os.replace(handle.name, path)
