"""The data manifest: per image, what the data fingerprint is made of (the image's content digest, a digest of its
captions, the split it fell in), and the split settings. Every training run logs it (artifact data_manifest.json),
so when the data change later, `changes` says how: images added, removed or edited, captions edited, split
settings changed, images moved between splits. The fingerprint says whether; the manifest says what.

Compact: short digests (16 hex characters for an image, 12 for its captions), about 60 bytes per image.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from .sources import CaptionData

VERSION = 1
ARTIFACT = "data_manifest.json"
NAMES_SHOWN = 5  # a change lists at most this many image names


def build(data: CaptionData) -> dict[str, Any]:
    """The manifest of `data`: {"images": {key: [image digest, captions digest, split]}, "settings": ...}."""
    images = {}
    for split, examples in (("train", data.train), ("validation", data.validation), ("test", data.test)):
        for example in examples:
            captions = hashlib.sha256(json.dumps(list(example.captions)).encode()).hexdigest()[:12]
            images[example.key] = [data.digests.get(example.key, "")[:16], captions, split]
    return {"version": VERSION, "fingerprint": data.fingerprint, "source": data.source,
            "settings": data.split_settings, "images": dict(sorted(images.items()))}


def as_text(manifest: dict[str, Any]) -> str:
    """One JSON line: no indentation, which would double its size."""
    return json.dumps(manifest, separators=(",", ":"))


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """How the data of `after` differ from `before`, one line per kind of change (empty: the same)."""
    old, new = before.get("images", {}), after.get("images", {})
    both = sorted(set(old) & set(new))
    found = [
        ("added", sorted(set(new) - set(old))),
        ("removed (deleted, or now unreadable)", sorted(set(old) - set(new))),
        ("edited (other image content)", [key for key in both if old[key][0] != new[key][0]]),
        ("with edited captions", [key for key in both if old[key][1] != new[key][1]]),
    ]
    lines = [f"{len(keys)} image(s) {what}: {names(keys)}" for what, keys in found if keys]
    settings_before, settings_after = before.get("settings", {}), after.get("settings", {})
    lines += [f"split setting {key}: {settings_before.get(key)!r} then, {settings_after.get(key)!r} now"
              for key in sorted(set(settings_before) | set(settings_after))
              if settings_before.get(key) != settings_after.get(key)]
    moved = [key for key in both if old[key][2] != new[key][2]]
    if moved:
        lines.append(f"{len(moved)} image(s) in another split than before: {names(moved)}")
    return lines


def names(keys: list[str]) -> str:
    more = len(keys) - NAMES_SHOWN
    return ", ".join(keys[:NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")
