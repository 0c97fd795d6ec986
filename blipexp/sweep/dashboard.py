"""optuna-dashboard on a sweep's study, served in this process on the storage object `run` uses (for a journal
file: its lock too)."""
from __future__ import annotations

from pathlib import Path

import optuna
import optuna_dashboard

from ..experiment.spec import ExperimentSpec
from ..runtime.secrecy import masked
from .study import JOURNAL, optuna_storage, storage_url, study_name


def find_study(spec: ExperimentSpec, home: Path, url: str | None) -> tuple[optuna.storages.BaseStorage, str, int]:
    """(storage, study name, study id) of the sweep's study in the database at `url` (else $BLIPEXP_STORAGE, else
    the journal file in `home`); ValueError when it holds none."""
    url = storage_url(url)
    storage = optuna_storage(home, url)
    name = study_name(spec)
    if name not in optuna.get_all_study_names(storage=storage):
        where = masked(url) if url else str(home / JOURNAL)
        raise ValueError(f"no study {name!r} in {where}: run the sweep first (python -m blipexp run {spec.name}"
                         f"{' --tiny' if spec.is_tiny else ''}), or pass the --home / --storage it used")
    return storage, name, storage.get_study_id_from_name(name)


def serve(storage: optuna.storages.BaseStorage, host: str, port: int) -> None:
    """optuna-dashboard until Ctrl-C."""
    try:
        optuna_dashboard.run_server(storage, host=host, port=port)
    except KeyboardInterrupt:
        pass
