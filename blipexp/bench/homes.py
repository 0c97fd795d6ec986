"""The blipexp homes the sections train in: empty, as a user's first run finds one; or each started with the
precision probe one home already measured, as the test suite's homes are (a fresh home probes the machine again)."""
from __future__ import annotations

import shutil
from pathlib import Path

PROBE = Path("cache") / "precision.json"  # where precision.cached_probe keeps a home's probe


def new_home(path: Path, probed: Path | None = None) -> Path:
    """`path`, created; with the precision probe of the home `probed` copied in, when that home has one."""
    path.mkdir(parents=True, exist_ok=True)
    if probed is not None and (probed / PROBE).is_file():
        (path / PROBE).parent.mkdir(exist_ok=True)
        shutil.copy(probed / PROBE, path / PROBE)
    return path
