"""Local dataset folders: images plus a caption file, read into `Sample`s (nothing is decoded here).

Layouts:
  - the `datasets` imagefolder layout: image files plus `metadata.jsonl`, one JSON object per line with
    `file_name` (a path relative to the folder) and the caption column, whose value is a string or a JSON
    list of reference captions;
  - `captions.csv`: a header row, then one row per (image, caption); the image column holds a path
    relative to the folder. An image named on several rows gets all their captions, in row order.

Why metadata.jsonl is read here and not with `datasets.load_dataset("imagefolder", ...)`: with datasets 5.2
one bad line sinks the whole folder. pyarrow's JSON reader aborts on a caption column that mixes strings and
lists (`Column(/text) changed from string to array`), on one malformed line, and on one line that is not
UTF-8; a sub-folder named `test/` or `validation/` turns into a split (`Unknown split "train"`), and a
`train/` plus `test/` pair silently drops the `test/` images. With `Image(decode=False)` it also only hands
back paths (bytes None), and keeps rows whose file is missing. Reading the file directly turns each of those
into a counted, skipped sample, using imagefolder's rules for `file_name`: also accepted as
`<image_column>_file_name`, relative, not escaping the folder.
"""
from __future__ import annotations

import csv
import json
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blipexp.data.sample import DataSourceError, Sample, has_undecodable, missing_column

METADATA_JSONL = "metadata.jsonl"
CAPTIONS_CSV = "captions.csv"


@dataclass
class _Row:
    """One metadata row: the image path as written, its caption value, or the problem that spoiled the row."""

    line: int
    file: Any = None
    caption: Any = None
    problem: str | None = None


def read_folder(folder: Path, image_column: str, caption_column: str, warnings: list[str]) -> list[Sample]:
    jsonl, table = folder / METADATA_JSONL, folder / CAPTIONS_CSV
    if jsonl.is_file():
        if table.is_file():
            warnings.append(f"{folder} has both {METADATA_JSONL} and {CAPTIONS_CSV}: using {METADATA_JSONL}")
        rows = _read_jsonl(jsonl, image_column, caption_column)
    elif table.is_file():
        rows = _read_csv(table, image_column, caption_column)
    else:
        raise DataSourceError(
            f"{folder} has neither {METADATA_JSONL} nor {CAPTIONS_CSV}. Fix: add one of the two layouts: "
            f"images plus {METADATA_JSONL} (the `datasets` imagefolder layout: one JSON object per line, "
            f'e.g. {{"file_name": "0001.jpg", "{caption_column}": "a caption"}}), or images plus {CAPTIONS_CSV} '
            f"(a header row `{image_column},{caption_column}`, then one row per image and caption)"
        )
    return _group_rows(folder, rows)


def _group_rows(folder: Path, rows: list[_Row]) -> list[Sample]:
    """One sample per image file (its rows' captions in order); each unreadable row is a sample of its own."""
    by_file: dict[str, Sample] = {}
    broken: list[Sample] = []
    for row in rows:
        relative = None if row.problem else _relative_path(row.file)
        if relative is None:  # a row we could not read, or no usable path in it
            broken.append(Sample(key=f"line-{row.line}", problem=row.problem or "missing_file"))
            continue
        sample = by_file.setdefault(relative, Sample(key=relative, image=folder / relative))
        sample.captions.append(row.caption)
    return list(by_file.values()) + broken


def _relative_path(value: Any) -> str | None:
    """A normalised path inside the folder, or None when the value is not one (imagefolder's rule too)."""
    if not isinstance(value, str) or not value.strip() or "://" in value:
        return None
    relative = posixpath.normpath(value.strip().replace("\\", "/"))
    if posixpath.isabs(relative) or relative == ".." or relative.startswith("../") or os.path.splitdrive(relative)[0]:
        return None  # never read outside the dataset folder
    return relative


def _read_jsonl(path: Path, image_column: str, caption_column: str) -> list[_Row]:
    rows: list[_Row] = []
    objects: list[tuple[int, dict]] = []
    for number, line in _text_lines(path):
        if not line.strip():
            continue
        if has_undecodable(line):
            rows.append(_Row(number, problem="bad_caption_encoding"))
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            rows.append(_Row(number, problem="bad_metadata_row"))
            continue
        objects.append((number, value))
    if not objects:
        return rows  # every line is broken: validation reports the counts
    columns = sorted({key for _, value in objects for key in value})
    file_key = _jsonl_file_key(columns, image_column)
    if file_key is None:
        raise missing_column(path, "image", image_column, columns, 'name it "file_name" (imagefolder\'s convention), or')
    if caption_column not in columns:
        raise missing_column(path, "caption", caption_column, columns)
    rows += [_Row(number, file=value.get(file_key), caption=value.get(caption_column)) for number, value in objects]
    return rows


def _jsonl_file_key(columns: list[str], image_column: str) -> str | None:
    for key in ("file_name", f"{image_column}_file_name", image_column):
        if key in columns:
            return key
    return None


def _read_csv(path: Path, image_column: str, caption_column: str) -> list[_Row]:
    # surrogateescape keeps a non-UTF-8 row readable by the csv module; _has_undecodable then flags just that row.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise DataSourceError(f"{path} is empty. Fix: start it with a header row `{image_column},{caption_column}`")
        columns = [name.strip() for name in header]
        for role, name in (("image", image_column), ("caption", caption_column)):
            if name not in columns:
                raise missing_column(path, role, name, columns)
        image_at, caption_at = columns.index(image_column), columns.index(caption_column)
        rows = []
        for values in reader:
            if not any(value.strip() for value in values):
                continue  # blank line
            if any(has_undecodable(value) for value in values):
                rows.append(_Row(reader.line_num, problem="bad_caption_encoding"))
                continue
            rows.append(_Row(
                reader.line_num,
                file=values[image_at] if image_at < len(values) else None,
                caption=values[caption_at] if caption_at < len(values) else None,  # None: missing_caption
            ))
        return rows


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as handle:
        yield from enumerate(handle, start=1)
