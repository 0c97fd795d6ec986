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
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blipexp.data.sample import DataSourceError, Sample, canonical_split, has_undecodable, missing_column

METADATA_JSONL = "metadata.jsonl"
CAPTIONS_CSV = "captions.csv"
COCO_JSON = "captions.json"
COCO_ANNOTATIONS = "annotations"  # the COCO release's folder of caption files
SPLIT_COLUMN = "split"
COCO_RELEASE_FILE = re.compile(r"captions_(?P<split>[A-Za-z]+)\d*\.json")  # captions_val2017.json
NOT_KARPATHY = ("dataset_info.json", "dataset_dict.json")  # written by datasets' save_to_disk
COCO_FORMAT = ('the COCO caption format: {"images": [{"id": 1, "file_name": "0001.jpg"}], '
               '"annotations": [{"image_id": 1, "caption": "a caption"}]}')
KARPATHY_FORMAT = ('the Karpathy split format: {"images": [{"filepath": "val2014", "filename": "0001.jpg", '
                   '"split": "test", "sentences": [{"raw": "a caption"}]}]} ("filepath" is optional)')


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
        layouts.append((COCO_JSON, lambda: _read_coco(folder, coco, images="", split=None)))
    karpathy = sorted(path for path in folder.glob("dataset_*.json") if path.name not in NOT_KARPATHY)
    if karpathy:
        layouts.append((karpathy[0].name, lambda: _read_karpathy(folder, karpathy)))
    release = sorted((folder / COCO_ANNOTATIONS).glob("captions_*.json"))
    if release:
        layouts.append((f"{COCO_ANNOTATIONS}/captions_*.json", lambda: _read_coco_release(folder, release, warnings)))
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
        relative = None if row.problem else _relative_path(row.file)
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
            _add_split(sample, row.split)
    return list(by_file.values()) + broken


def _add_split(sample: Sample, name: Any) -> None:
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
    has_split = SPLIT_COLUMN in columns
    rows += [
        _Row(number, file=value.get(file_key), caption=value.get(caption_column),
             split=_split_value(value.get(SPLIT_COLUMN)) if has_split else None)
        for number, value in objects
    ]
    return rows


def _jsonl_file_key(columns: list[str], image_column: str) -> str | None:
    for key in ("file_name", f"{image_column}_file_name", image_column):
        if key in columns:
            return key
    return None


def _split_value(value: Any) -> Any:
    return "" if value is None else value  # "": this row names no split although its file has the column


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


# --- whole-file JSON layouts: COCO captions (one file, or the release's annotations/), Karpathy split files


def _read_coco_release(folder: Path, files: list[Path], warnings: list[str]) -> list[Sample]:
    """annotations/captions_<split><year>.json, each file's images in <split><year>/ (COCO's own layout)."""
    samples: list[Sample] = []
    for path in files:
        match = COCO_RELEASE_FILE.fullmatch(path.name)
        split = canonical_split(match["split"]) if match else None
        if split is None:
            raise DataSourceError(
                f"{path}: its name gives no split. Fix: name it captions_<split><year>.json with split train, val "
                f"or test (e.g. captions_val2017.json, its images in {folder / 'val2017'}), or move it out of "
                f"{path.parent}"
            )
        images = path.stem.removeprefix("captions_")
        if not (folder / images).is_dir():
            warnings.append(f"{folder / images} is not a folder: the images of {path.name} are expected there")
        samples += _read_coco(folder, path, images, split)
    return samples


def _read_coco(folder: Path, path: Path, images: str, split: str | None) -> list[Sample]:
    """One COCO caption file: its images (paths relative to folder/images) with their annotations' captions."""
    data = _load_json(path, COCO_FORMAT)
    entries, annotations = (_json_list(data, path, key, COCO_FORMAT) for key in ("images", "annotations"))
    _require_keys(path, "images", entries, ("id", "file_name"), COCO_FORMAT)
    _require_keys(path, "annotations", annotations, ("image_id", "caption"), COCO_FORMAT)
    prefix = f"{images}/" if images else ""
    by_key: dict[str, Sample] = {}
    broken: list[Sample] = []
    by_id: dict[Any, Sample] = {}
    for index, entry in enumerate(entries):
        sample = _image_sample(folder, prefix, entry, index, by_key, broken)
        if isinstance(entry, dict) and isinstance(entry.get("id"), (int, str)):
            by_id[entry["id"]] = sample
    for index, annotation in enumerate(annotations):
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        sample = by_id.get(image_id) if isinstance(image_id, (int, str)) else None
        if sample is None:  # a caption we cannot place: counted, the rest of the file is fine
            problem = "unknown_image_id" if isinstance(annotation, dict) else "bad_metadata_row"
            broken.append(Sample(key=f"{prefix}annotation-{index}", problem=problem))
        else:
            sample.captions.append(annotation.get("caption"))
    samples = _captioned(by_key) + broken
    for sample in samples:
        sample.split = split  # the file's split: one per file in the COCO release, none for captions.json
    return samples


def _read_karpathy(folder: Path, files: list[Path]) -> list[Sample]:
    """A Karpathy split file: each image with its sentences and its split (restval images are training images)."""
    if len(files) > 1:
        names = ", ".join(path.name for path in files)
        raise DataSourceError(f"{folder} holds several Karpathy split files ({names}). Fix: keep the one to use "
                              "in the folder and move the others out")
    path = files[0]
    entries = _json_list(_load_json(path, KARPATHY_FORMAT), path, "images", KARPATHY_FORMAT)
    _require_keys(path, "images", entries, ("filename", "sentences"), KARPATHY_FORMAT)
    # Like a split column: once some entry names a split, every entry must name a known one.
    has_split = any(isinstance(entry, dict) and SPLIT_COLUMN in entry for entry in entries)
    by_key: dict[str, Sample] = {}
    broken: list[Sample] = []
    for index, entry in enumerate(entries):
        sample = _image_sample(folder, "", entry, index, by_key, broken)
        if sample.image is not None:  # not a broken entry
            sample.captions += _sentences(entry.get("sentences"))
            if has_split:
                _add_split(sample, _split_value(entry.get(SPLIT_COLUMN)))
    return _captioned(by_key) + broken


def _sentences(value: Any) -> list[Any]:
    return [s.get("raw") if isinstance(s, dict) else None for s in value] if isinstance(value, list) else []


def _image_sample(
    folder: Path, prefix: str, entry: Any, index: int, by_key: dict[str, Sample], broken: list[Sample]
) -> Sample:
    """The sample of one image entry: shared by entries naming the same file, or a broken one added to `broken`."""
    relative = _relative_path(_entry_path(entry))
    if relative is None:
        problem = "missing_file" if isinstance(entry, dict) else "bad_metadata_row"
        sample = Sample(key=f"{prefix}image-{index}", problem=problem)
        broken.append(sample)
        return sample
    key = prefix + relative
    if key not in by_key:
        by_key[key] = Sample(key=key, image=folder / key)
    return by_key[key]


def _entry_path(entry: Any) -> Any:
    """An image entry's path: COCO's "file_name", or Karpathy's "filepath"/"filename" ("filepath" is absent in
    the Flickr files, whose images sit in the folder itself)."""
    if not isinstance(entry, dict):
        return None
    if "file_name" in entry:
        return entry["file_name"]
    filepath, filename = entry.get("filepath"), entry.get("filename")
    if isinstance(filepath, str) and isinstance(filename, str):
        return posixpath.join(filepath, filename)
    return filename


def _captioned(by_key: dict[str, Sample]) -> list[Sample]:
    """The samples, those without any caption marked missing_caption (no need to check their images)."""
    for sample in by_key.values():
        if not sample.captions and sample.problem is None:
            sample.problem = "missing_caption"
    return list(by_key.values())


def _load_json(path: Path, format_: str) -> Any:
    try:
        return json.loads(path.read_bytes())  # bytes: json detects UTF-8/16/32 and a byte-order mark itself
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise DataSourceError(f"{path} is not valid JSON ({exc}). Fix: write it in {format_}") from None


def _json_list(data: Any, path: Path, key: str, format_: str) -> list:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, list):
        raise DataSourceError(f"{path} has no {key!r} list at its top level. Fix: write it in {format_}")
    return value


def _require_keys(path: Path, name: str, entries: list, keys: tuple[str, ...], format_: str) -> None:
    """Raise unless some entry has each key: a key absent throughout means a file of another kind, not a bad row."""
    for key in keys:
        if entries and not any(isinstance(entry, dict) and key in entry for entry in entries):
            first = next((entry for entry in entries if isinstance(entry, dict)), {})
            present = ", ".join(repr(k) for k in first) or "none"
            raise DataSourceError(f"{path}: no entry of {name!r} has the key {key!r} (the first one has: {present}). "
                                  f"Fix: write it in {format_}")
