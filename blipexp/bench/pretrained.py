"""The pretrained tiny model every tiny section starts from: built once, before anything is timed."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..pretrain import CACHE_VARIABLE, RECIPE, cache_root, pretrained_tiny


def bench_pretrained(shared: Path) -> dict:
    """Build (or find) the pretrained tiny model in one cache that all the benchmark's homes use, so that no
    timed trial or sweep pays for the build; report how long the build took."""
    os.environ.setdefault(CACHE_VARIABLE, str(shared))  # a cache the caller already shares (the tests') is kept
    cached = (cache_root(shared) / RECIPE.digest() / "recipe.json").is_file()
    started = time.perf_counter()
    folder = pretrained_tiny(shared, echo=False)
    return {"seconds": time.perf_counter() - started, "built": not cached, "folder": str(folder),
            "steps": RECIPE.steps, "images": RECIPE.images}
