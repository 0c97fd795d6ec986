"""The first look at a dataset's images: each one read, hashed and test-decoded once, in parallel, and remembered.

Why up front: `max_bad_fraction` must stop a hopeless dataset before training, and the data fingerprint needs
every image's content hash. Why remembered: the second run on the same data (a sweep's trials, parallel
workers, a re-run) must start training within seconds, whatever the dataset's size. What is kept per image is
small (its hash, or why it is unusable), never pixels.

The record lives in `<cache_dir>/<source id>.json`. A folder's entry for an image is reused while the file's
size and modification time are unchanged (a `stat`, no read); an Arrow table's entries while its content
fingerprint is the same. Changed or new images are checked again; entries of images that are gone are dropped.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from blipexp.data.images import BadImage, check_decodes
from blipexp.runtime.environment import available_cores
from blipexp.runtime.progress import bar as progress_bar

VERSION = 1  # bump when what a check decides changes: older records are then ignored
CHUNK = 128  # images per task handed to a worker process
IN_PROCESS_BELOW = 256  # fewer images than this are checked in this process (a pool costs more than it saves)


class ImageReader(Protocol):
    """Where a dataset's encoded images come from: a folder's files, or an Arrow table's rows."""

    def read(self, ref: Any) -> bytes: ...

    def stamp(self, ref: Any) -> Any: ...  # changes when the image may have changed; None: never


@dataclass(frozen=True)
class ImageCheck:
    digest: str | None  # sha256 of the encoded bytes; None when unusable
    reason: str | None  # why it is unusable (a BadImage reason); None when fine


@dataclass
class SurveyReport:
    checks: dict[str, ImageCheck]  # by sample key
    checked: int  # images read and decoded now
    reused: int  # images whose earlier check was reused


def survey(items: Sequence[tuple[str, Any]], reader: ImageReader, record: Path | None, *,
           progress: bool = True) -> SurveyReport:
    """Check the (key, ref) images with `reader`, reusing `record` (a JSON file) where it is still valid."""
    old = _load(record)
    stamps = {key: _jsonable(reader.stamp(ref)) for key, ref in items}
    checks: dict[str, ImageCheck] = {}
    todo: list[tuple[str, Any]] = []
    for key, ref in items:
        entry = old.get(key)
        if entry is not None and entry[0] == stamps[key]:
            checks[key] = ImageCheck(entry[1], entry[2])
        else:
            todo.append((key, ref))
    checks.update(_check_all(todo, reader, progress))
    if record is not None and (todo or len(old) != len(items)):
        _save(record, {key: [stamps[key], checks[key].digest, checks[key].reason] for key, _ in items})
    return SurveyReport(checks, checked=len(todo), reused=len(items) - len(todo))


def check_image(reader: ImageReader, ref: Any) -> ImageCheck:
    try:
        data = reader.read(ref)
        check_decodes(data)
    except BadImage as exc:
        return ImageCheck(None, exc.reason)
    return ImageCheck(hashlib.sha256(data).hexdigest(), None)


def _check_chunk(reader: ImageReader, chunk: list[tuple[str, Any]]) -> list[tuple[str, ImageCheck]]:
    return [(key, check_image(reader, ref)) for key, ref in chunk]


def _check_all(todo: list[tuple[str, Any]], reader: ImageReader, progress: bool) -> dict[str, ImageCheck]:
    if not todo:
        return {}
    chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
    results: dict[str, ImageCheck] = {}
    with progress_bar("first look at the images", len(todo), "img",
                      show=progress and len(todo) >= IN_PROCESS_BELOW,  # a few images: done before a bar helps
                      mininterval=1.0, leave=False) as bar:
        if len(todo) < IN_PROCESS_BELOW or available_cores() == 1:
            for chunk in chunks:
                results.update(_check_chunk(reader, chunk))
                bar.update(len(chunk))
            return results
        # fork: the reader (an open Arrow table, a folder) is inherited instead of re-imported per worker
        context = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(available_cores(), mp_context=context) as pool:
            for done in pool.map(_check_chunk, [reader] * len(chunks), chunks):
                results.update(done)
                bar.update(len(done))
    return results


def _jsonable(stamp: Any) -> Any:
    return list(stamp) if isinstance(stamp, tuple) else stamp


def _load(record: Path | None) -> dict[str, list]:
    if record is None or not record.is_file():
        return {}
    try:
        content = json.loads(record.read_text())
    except (OSError, ValueError):
        return {}  # unreadable: check everything again and overwrite it
    return content.get("images", {}) if content.get("version") == VERSION else {}


def _save(record: Path, images: dict[str, list]) -> None:
    record.parent.mkdir(parents=True, exist_ok=True)
    partial = record.with_name(f".{record.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps({"version": VERSION, "images": images}))
    os.replace(partial, record)  # atomic: parallel workers each write a whole, equal record


def record_path(cache_dir: Path | None, source_id: str) -> Path | None:
    """The record of one source (a folder's path, or a Hub table's id) under cache_dir."""
    if cache_dir is None:
        return None
    return Path(cache_dir) / f"{hashlib.sha256(source_id.encode()).hexdigest()[:20]}.json"
