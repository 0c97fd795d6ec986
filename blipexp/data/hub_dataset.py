"""Hub datasets: `datasets.load_dataset` (or the local HF cache), kept as memory-mapped Arrow tables.

Nothing is decoded or copied into Python lists: each `Sample` points at a row (`Sample.image` is the row index
into one table holding every split that is used), and `ArrowImages` reads that row's image bytes when a
DataLoader worker asks for it. The image column is cast to `Image(decode=False)`, so a corrupt image is ours
to count, not a crash inside `datasets`.

Own splits: with `splits` "auto" or "own" every split of the dataset is loaded and named by
`sample.canonical_split` ("val" -> "validation"); with "random" only `dataset_split` is.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from blipexp.data.hub import NotAHubId, hub_answers
from blipexp.data.sample import DataSourceError, Sample, canonical_split, missing_column

HUB_FIXES = (
    "run with --tiny (the embedded dataset), or --set dataset=/path/to/folder "
    "(a local folder with images and captions: README 'Bringing your own data')"
)


class ArrowImages:
    """Reads one row's encoded image from the Arrow table (bytes, or the file a row points at). Picklable:
    a memory-mapped `datasets.Dataset` pickles as its file paths, so DataLoader workers reopen it cheaply."""

    def __init__(self, table: Any, column: str) -> None:
        self.table = table
        self.column = column

    def read(self, ref: int) -> bytes:
        from blipexp.data.images import BadImage, read_image_file

        value = self.table[int(ref)][self.column]
        if isinstance(value, dict):  # Image(decode=False): {"bytes": ..., "path": ...}
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, str) and value:
            return read_image_file(value)
        raise BadImage("missing_file", f"row {ref} holds no image")

    def stamp(self, ref: int) -> None:
        return None  # rows of an Arrow table do not change under the same fingerprint


def read_hub(source: str, *, split: str, revision: str | None, image_column: str, caption_column: str,
             own_splits: bool, warnings: list[str]) -> tuple[list[Sample], ArrowImages, str]:
    """The dataset's samples (one per row), the reader of their images, and an id of the table's content."""
    loaded = _load_hub_dataset(source, None if own_splits else split, revision, warnings)
    return samples_from_arrow(loaded, image_column=image_column, caption_column=caption_column,
                              where=f"Hub dataset {source!r}", warnings=warnings)


def samples_from_arrow(loaded: Any, *, image_column: str, caption_column: str, where: str,
                       warnings: list[str]) -> tuple[list[Sample], ArrowImages, str]:
    """Samples from a `datasets.Dataset` (no own splits) or a `DatasetDict` (its splits, by canonical name)."""
    import datasets

    parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {None: loaded}
    named = {}
    for name, part in parts.items():
        ours = canonical_split(name) if name is not None else None
        if name is not None and ours is None:
            warnings.append(f"{where}: split {name!r} is not train/validation/test: not used")
            continue
        named[name] = (ours, _select(part, image_column, caption_column, f"{where} (split {name!r})"))
    if not named:
        raise DataSourceError(f"{where} has no split named like train, validation or test: "
                              f"{', '.join(map(str, parts))}. Fix: --set splits=random --set dataset_split=<one of them>")
    table = datasets.concatenate_datasets([part for _, part in named.values()]) if len(named) > 1 \
        else next(iter(named.values()))[1]
    samples, offset = [], 0
    for ours, part in named.values():
        captions = part[caption_column]  # one column, not the images: a list of strings / lists
        samples += [Sample(key=f"row-{offset + i}", image=offset + i, captions=[c], split=ours)
                    for i, c in enumerate(captions)]
        offset += len(part)
    # datasets' own content hash of the table (derived from its files and the operations applied); private, no
    # public equivalent: tests/test_private_apis.py checks it
    return samples, ArrowImages(table, image_column), table._fingerprint


def _select(part: Any, image_column: str, caption_column: str, where: str) -> Any:
    import datasets

    columns = list(part.column_names)
    for role, name in (("image", image_column), ("caption", caption_column)):
        if name not in columns:
            raise missing_column(where, role, name, columns)
    part = part.select_columns([image_column, caption_column])
    if isinstance(part.features[image_column], datasets.Image):
        part = part.cast_column(image_column, datasets.Image(decode=False))
    return part


def _load_hub_dataset(source: str, split: str | None, revision: str | None, warnings: list[str]) -> Any:
    """`datasets.load_dataset`, failing within seconds when the Hub is unreachable and nothing is cached.

    Without network, load_dataset retries for ~25 s before it looks in the cache. So one short request
    checks the Hub first; when it gets no answer, loading runs in offline mode: from the cache, or failing at once.
    """
    import datasets

    requested = _offline_requested()
    try:
        unreachable = not requested and not hub_answers(source, "dataset", revision)
    except NotAHubId as exc:
        raise DataSourceError(f"{exc}. Fix: {HUB_FIXES}") from None
    offline = requested or unreachable
    try:
        with _offline_mode(offline):
            dataset = datasets.load_dataset(source, split=split, revision=revision)
    except Exception as exc:  # datasets raises many types here; each one means "not loadable"
        raise DataSourceError(_hub_failure_message(source, split, offline, exc)) from exc
    if unreachable:
        warnings.append(f"the Hub could not be reached: {source!r} was loaded from the local cache, "
                        "which may be older than the Hub's version")
    return dataset


def _hub_failure_message(source: str, split: str | None, offline: bool, exc: Exception) -> str:
    where = "the local cache (the Hub is unreachable or offline mode is on)" if offline else "the Hub or the local cache"
    which = f" (split {split!r})" if split else ""
    message = f"could not load dataset {source!r}{which} from {where}: {type(exc).__name__}: {exc}. "
    if "split" in str(exc).lower() and not offline:
        message += "If the split name is wrong, --set dataset_split=<one of the splits listed>. "
    if "/" in source:
        message += f"There is no local folder {source!r} either. "
    return message + f"Fix: {HUB_FIXES}"


def _offline_requested() -> bool:
    """Offline mode as set now; the env var is read here too since the libraries read theirs at import time."""
    import datasets
    from huggingface_hub import constants

    from_env = any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")
                   for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return from_env or constants.is_offline_mode() or bool(datasets.config.HF_HUB_OFFLINE)


@contextlib.contextmanager
def _offline_mode(enabled: bool) -> Iterator[None]:
    """Turn the Hub's offline mode on for one load: both libraries read a module flag they set at import (no public
    switch after import; tests/test_private_apis.py checks the flags)."""
    if not enabled:
        yield
        return
    import datasets
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved
