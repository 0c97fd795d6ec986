"""Whole-file JSON layouts of a dataset folder: COCO captions (one `captions.json`, or the COCO release's
`annotations/captions_<split><year>.json` beside its image folders) and Karpathy split files
(`dataset_coco.json`, `dataset_flickr30k.json`, ...). Read into `Sample`s; images are not opened here.
"""
from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path
from typing import Any

from blipexp.data.sample import (
    SPLIT_COLUMN,
    DataSourceError,
    Sample,
    add_split,
    canonical_split,
    relative_path,
    split_value,
)

COCO_JSON = "captions.json"
COCO_ANNOTATIONS = "annotations"  # the COCO release's folder of caption files
COCO_RELEASE_FILE = re.compile(r"captions_(?P<split>[A-Za-z]+)\d*\.json")  # captions_val2017.json
NOT_KARPATHY = ("dataset_info.json", "dataset_dict.json")  # written by datasets' save_to_disk
COCO_FORMAT = ('the COCO caption format: {"images": [{"id": 1, "file_name": "0001.jpg"}], '
               '"annotations": [{"image_id": 1, "caption": "a caption"}]}')
KARPATHY_FORMAT = ('the Karpathy split format: {"images": [{"filepath": "val2014", "filename": "0001.jpg", '
                   '"split": "test", "sentences": [{"raw": "a caption"}]}]} ("filepath" is optional)')


def read_coco_release(folder: Path, files: list[Path], warnings: list[str]) -> list[Sample]:
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
        samples += read_coco(folder, path, images, split)
    return samples


def read_coco(folder: Path, path: Path, images: str, split: str | None) -> list[Sample]:
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


def read_karpathy(folder: Path, files: list[Path]) -> list[Sample]:
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
                add_split(sample, split_value(entry.get(SPLIT_COLUMN)))
    return _captioned(by_key) + broken


def _sentences(value: Any) -> list[Any]:
    return [s.get("raw") if isinstance(s, dict) else None for s in value] if isinstance(value, list) else []


def _image_sample(
    folder: Path, prefix: str, entry: Any, index: int, by_key: dict[str, Sample], broken: list[Sample]
) -> Sample:
    """The sample of one image entry: shared by entries naming the same file, or a broken one added to `broken`."""
    relative = relative_path(_entry_path(entry))
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
