"""What a reader hands on: one `Sample` per image as the source lists it, before any check, and the one
error type for data that cannot be used (`DataSourceError`, a ValueError whose message names the fix)."""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPLIT_COLUMN = "split"  # the column (or JSON key) naming a sample's own split
# Names datasets give their own splits, mapped to ours. Karpathy's "restval" images are training images.
SPLIT_ALIASES = {"train": "train", "training": "train", "restval": "train",
                 "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
                 "test": "test", "testing": "test"}


class DataSourceError(ValueError):
    """The data cannot be loaded or used; the message names the problem and the fix."""


@dataclass
class Sample:
    """A sample before validation: where its image is, its raw caption values, or a problem already known."""

    key: str  # stable id: the path relative to the folder, or "row-<i>" (Hub)
    image: Any = None  # a file Path, or a row index into a Hub dataset's Arrow table, or None
    captions: list[Any] = field(default_factory=list)  # raw values: str, list of str, None, ...
    problem: str | None = None  # a skip reason found while reading: bad_caption_encoding, missing_file, ...
    split: str | None = None  # the dataset's own split ("train", "validation", "test"), None if it has none


def canonical_split(name: Any) -> str | None:
    """Our name for a dataset's own split name ("val" -> "validation"), None for an unknown or empty one."""
    return SPLIT_ALIASES.get(str(name).strip().lower()) if name is not None else None


def has_undecodable(text: str) -> bool:
    """True if `text` holds lone surrogates: bytes that were not UTF-8 (read with errors="surrogateescape")."""
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def missing_column(path: Path | str, role: str, name: str, columns: list[str], extra_fix: str = "") -> DataSourceError:
    available = ", ".join(repr(column) for column in columns) or "none"
    setting = f"{role}_column"
    return DataSourceError(
        f"{path} has no {role} column {name!r}; its columns are: {available}. "
        f"Fix: {extra_fix + ' ' if extra_fix else ''}--set {setting}=<one of those columns>"
    )


def add_split(sample: Sample, name: Any) -> None:
    """Put `sample` in the split `name` (as written in the data).

    An unknown name, or a second split different from the first, makes the image a counted problem rather than
    an error: a typo on a few rows should not sink a whole dataset (the counts are reported, and
    max_bad_fraction still stops a column that is wrong throughout), and guessing a split instead could put
    test images into training.
    """
    split = canonical_split(name)
    if split is None:
        sample.problem = sample.problem or "unknown_split"
    elif sample.split is None:
        sample.split = split
    elif split != sample.split:
        sample.problem = sample.problem or "conflicting_split"


def relative_path(value: Any) -> str | None:
    """A normalised path inside the folder, or None when the value is not one (imagefolder's rule too)."""
    if not isinstance(value, str) or not value.strip() or "://" in value:
        return None
    relative = posixpath.normpath(value.strip().replace("\\", "/"))
    if posixpath.isabs(relative) or relative == ".." or relative.startswith("../") or os.path.splitdrive(relative)[0]:
        return None  # never read outside the dataset folder
    return relative


def split_value(value: Any) -> Any:
    return "" if value is None else value  # "": this row names no split although its file has the column
