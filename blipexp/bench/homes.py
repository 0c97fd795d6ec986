"""The blipexp homes the sections train in: empty, as a user's first run finds one; or each started as the test
suite's homes are, from one home already used: its precision probe (a fresh home probes the machine again) and its
empty MLflow store (a fresh one runs MLflow's schema migrations: seconds of CPU)."""
from __future__ import annotations

import shutil
from pathlib import Path

PROBE = Path("cache") / "precision.json"  # where precision.cached_probe keeps a home's probe
STORE = Path("mlflow.db")  # where tracking.configure makes a home's sqlite store


def new_home(path: Path, probed: Path | None = None) -> Path:
    """`path`, created; with the precision probe and the store of the home `probed` copied in, where it has them."""
    path.mkdir(parents=True, exist_ok=True)
    for kept in (PROBE, STORE):
        if probed is not None and (probed / kept).is_file():
            (path / kept).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(probed / kept, path / kept)
    return path


def empty_store(home: Path) -> None:
    """`home`'s store made, empty, by tracking.configure (as a user's first run makes it): what new_home copies.
    MLflow is left pointed at it: every section that tracks configures its own home first."""
    from .. import tracking

    tracking.configure(new_home(home))
