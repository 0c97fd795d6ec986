"""Data: sources (Hub id, local folder, embedded pitch scenes), image checks, split, collator. Imports runtime and
experiment."""
from __future__ import annotations

from pathlib import Path

from ..experiment.presets import PITCH_DATASET
from ..experiment.spec import ExperimentSpec
from .pitch import write_pitch_dataset
from .sample import DataSourceError
from .sources import CaptionData, Example, load_caption_data

PITCH_SEED = 0  # the embedded scenes are fixed; split_seed varies only the split

__all__ = ["CaptionData", "DataSourceError", "Example", "load_data"]


def load_data(spec: ExperimentSpec, home: Path, progress: bool = True) -> CaptionData:
    """List, check and split the spec's dataset. The pitch scenes are generated under home/data first; the first
    look at the images is kept under home/cache/data (see data.survey)."""
    source = spec.dataset
    if source == PITCH_DATASET:
        source = str(write_pitch_dataset(home / "data", spec.pitch_scenes, seed=PITCH_SEED))
    return load_caption_data(
        source,
        image_column=spec.image_column,
        caption_column=spec.caption_column,
        hub_split=spec.dataset_split,
        revision=spec.dataset_revision,
        splits=spec.splits,
        val_fraction=spec.val_fraction,
        test_fraction=spec.test_fraction,
        split_seed=spec.split_seed,
        max_bad_fraction=spec.max_bad_fraction,
        cache_dir=home / "cache" / "data",
        progress=progress,
    )
