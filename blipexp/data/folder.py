"""Local dataset folders: images plus caption files, read into `Sample`s (only the caption files are opened here).

Layouts, in order of preference (paths relative to the dataset folder; the first one present is read, and a
warning names any other one the folder also holds):
  - `metadata.jsonl`, the `datasets` imagefolder layout: one JSON object per line with `file_name` and the
    caption column, whose value is a string or a JSON list of reference captions;
  - `captions.csv`: a header row, then one row per (image, caption); the image column holds the image path.
    In both files an image named on several rows gets all their captions, in row order, and an optional
    `split` column gives the dataset's own split (train / validation / test, or an alias: val, dev, restval...);
  - `captions.json`, one file in the COCO caption format: {"images": [{"id", "file_name"}, ...],
    "annotations": [{"image_id", "caption"}, ...]}; an image gets the captions of all its annotations;
  - a Karpathy split file `dataset_<name>.json` (dataset_coco.json, dataset_flickr30k.json, ...):
    {"images": [{"filepath" (optional), "filename", "split", "sentences": [{"raw"}, ...]}, ...]};
  - the COCO release: `annotations/captions_<split><year>.json` (captions_train2017.json, captions_val2017.json)
    in the COCO caption format, the images of each in `<split><year>/`;
  - split sub-folders, when the folder itself holds no caption file: `train/`, `validation/` (or `val/`,
    `valid/`, `dev/`), `test/`, each with its own metadata.jsonl or captions.csv (paths relative to the
    sub-folder; keys then start with the sub-folder's name, so they stay unique).

Every image file is one `Sample`, keyed by its path relative to the dataset folder (posix style). `split` is
the dataset's own split where the layout gives one, else None. Rows that cannot be read become samples with a
`problem` (a skip reason, counted later); only a folder that cannot be used at all raises `DataSourceError`.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blipexp.data.coco import (
    COCO_ANNOTATIONS,
    COCO_FORMAT,
    COCO_JSON,
    KARPATHY_FORMAT,
    NOT_KARPATHY,
    read_coco,
    read_coco_release,
    read_karpathy,
)
from blipexp.data.sample import (
    SPLIT_COLUMN,
    DataSourceError,
    Sample,
    add_split,
    canonical_split,
    has_undecodable,
    missing_column,
    relative_path,
    split_value,
)

METADATA_JSONL = "metadata.jsonl"
CAPTIONS_CSV = "captions.csv"


@dataclass
class _Row:
    """One metadata row: the image path as written, its caption value, or the problem that spoiled the row."""

    line: int
    file: Any = None
    caption: Any = None
    problem: str | None = None
    split: Any = None  # the raw split value if the file has a split column ("" when this row has none), else None


def read_folder(folder: Path, image_column: str, caption_column: str, warnings: list[str]) -> list[Sample]:
    """The samples of the first layout `folder` holds (module docstring); DataSourceError if it holds none."""
    layouts = _root_layouts(folder, image_column, caption_column, warnings)
    if layouts:
        (name, read), *others = layouts
        if others:
            names = ", ".join(other for other, _ in others)
            warnings.append(f"{folder} holds several caption files: using {name}, ignoring {names}")
        return read()
    subfolders = _split_folders(folder)
    if any(files for _, _, files in subfolders):
        return _read_split_folders(folder, subfolders, image_column, caption_column, warnings)
    raise DataSourceError(_no_layout_message(folder, image_column, caption_column))


def _root_layouts(
    folder: Path, image_column: str, caption_column: str, warnings: list[str]
) -> list[tuple[str, Callable[[], list[Sample]]]]:
    """The layouts in the folder itself, preferred first: (the file that marks it, a function reading it)."""
    layouts: list[tuple[str, Callable[[], list[Sample]]]] = [
        (path.name, lambda path=path: _group_rows(folder, _read_rows(path, image_column, caption_column)))
        for path in _caption_files(folder)
    ]
    coco = folder / COCO_JSON
    if coco.is_file():
        layouts.append((COCO_JSON, lambda: read_coco(folder, coco, images="", split=None)))
    karpathy = sorted(path for path in folder.glob("dataset_*.json") if path.name not in NOT_KARPATHY)
    if karpathy:
        layouts.append((karpathy[0].name, lambda: read_karpathy(folder, karpathy)))
    release = sorted((folder / COCO_ANNOTATIONS).glob("captions_*.json"))
    if release:
        layouts.append((f"{COCO_ANNOTATIONS}/captions_*.json", lambda: read_coco_release(folder, release, warnings)))
    return layouts


def _no_layout_message(folder: Path, image_column: str, caption_column: str) -> str:
    examples = [
        (f"{METADATA_JSONL} (the `datasets` imagefolder layout), one JSON object per line: "
         f'{{"file_name": "0001.jpg", "{caption_column}": "a caption"}}'),
        (f"{CAPTIONS_CSV}: a header row `{image_column},{caption_column}`, then a row per image and caption: "
         "`0001.jpg,a caption`"),
        f"{COCO_JSON} in {COCO_FORMAT}",
        f"dataset_coco.json (a Karpathy split file; or dataset_flickr30k.json, ...) in {KARPATHY_FORMAT}",
        (f"the COCO release: {COCO_ANNOTATIONS}/captions_train2017.json and captions_val2017.json, "
         "their images in train2017/ and val2017/"),
        f"split sub-folders: train/, validation/ (or val/), test/, each with a {METADATA_JSONL} or {CAPTIONS_CSV}",
    ]
    return (
        f"{folder} holds no caption file in a layout blipexp reads. Fix: add one of these (image paths relative "
        f"to the folder; a `{SPLIT_COLUMN}` column in {METADATA_JSONL} or {CAPTIONS_CSV} gives the dataset's own "
        "split):\n" + "\n".join(f"  - {example}" for example in examples)
    )


# --- one row per caption: metadata.jsonl, captions.csv, and split sub-folders holding them


def _caption_files(directory: Path) -> list[Path]:
    """The row-per-caption files in `directory`, preferred first."""
    return [path for path in (directory / METADATA_JSONL, directory / CAPTIONS_CSV) if path.is_file()]


def _read_rows(path: Path, image_column: str, caption_column: str) -> list[_Row]:
    read = _read_jsonl if path.name == METADATA_JSONL else _read_csv
    return read(path, image_column, caption_column)


def _split_folders(folder: Path) -> list[tuple[Path, str, list[Path]]]:
    """Sub-folders named like a split (train/, val/, ...): (the folder, our split name, its caption files)."""
    found = []
    with os.scandir(folder) as entries:  # one listing of the folder, no stat per image
        for entry in entries:
            split = canonical_split(entry.name)
            if split is not None and entry.is_dir():
                found.append((Path(entry.path), split, _caption_files(Path(entry.path))))
    return sorted(found)


def _read_split_folders(
    folder: Path, subfolders: list[tuple[Path, str, list[Path]]], image_column: str, caption_column: str,
    warnings: list[str],
) -> list[Sample]:
    samples: list[Sample] = []
    for subfolder, split, files in subfolders:
        if not files:
            warnings.append(f"{subfolder} has no {METADATA_JSONL} or {CAPTIONS_CSV}: its images are not used")
            continue
        if len(files) > 1:
            warnings.append(f"{subfolder} has both {METADATA_JSONL} and {CAPTIONS_CSV}: using {files[0].name}")
        rows = _read_rows(files[0], image_column, caption_column)
        samples += _group_rows(folder, rows, split=split, prefix=f"{subfolder.name}/")
    return samples


def _group_rows(folder: Path, rows: list[_Row], split: str | None = None, prefix: str = "") -> list[Sample]:
    """One sample per image file (its rows' captions in order); each unreadable row is a sample of its own.

    `prefix` is the split sub-folder the rows' paths are relative to ("" at the root), `split` its split.
    """
    by_file: dict[str, Sample] = {}
    broken: list[Sample] = []
    for row in rows:
        relative = None if row.problem else relative_path(row.file)
        if relative is None:  # a row we could not read, or no usable path in it
            broken.append(Sample(key=f"{prefix}line-{row.line}", problem=row.problem or "missing_file", split=split))
            continue
        key = prefix + relative
        sample = by_file.get(key)
        if sample is None:
            sample = by_file[key] = Sample(key=key, image=folder / key, split=split)
        sample.captions.append(row.caption)
        # A row naming no split is in its sub-folder's split, if any (at the root: unknown_split).
        if row.split is not None and (split is None or str(row.split).strip()):
            add_split(sample, row.split)
    return list(by_file.values()) + broken


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
    has_split = SPLIT_COLUMN in columns
    rows += [
        _Row(number, file=value.get(file_key), caption=value.get(caption_column),
             split=split_value(value.get(SPLIT_COLUMN)) if has_split else None)
        for number, value in objects
    ]
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
        split_at = columns.index(SPLIT_COLUMN) if SPLIT_COLUMN in columns else None
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
                split=None if split_at is None else (values[split_at] if split_at < len(values) else ""),
            ))
        return rows


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as handle:
        yield from enumerate(handle, start=1)
