"""Load image-caption pairs from a local folder or a Hub dataset, validate them, and split them.

`load_caption_data(source)` picks the source:

* an existing folder, in one of two layouts:
  - the `datasets` imagefolder layout: image files plus `metadata.jsonl`, one JSON object per line with
    `file_name` (a path relative to the folder) and the caption column, whose value is a string or a JSON
    list of reference captions;
  - `captions.csv`: a header row, then one row per (image, caption); the image column holds a path
    relative to the folder. An image named on several rows gets all their captions, in row order.
* otherwise a Hub dataset id, loaded with `datasets.load_dataset` (or from the local cache).

Why metadata.jsonl is read here and not with `datasets.load_dataset("imagefolder", ...)`: with datasets 5.2
one bad line sinks the whole folder. pyarrow's JSON reader aborts on a caption column that mixes strings and
lists (`Column(/text) changed from string to array`), on one malformed line, and on one line that is not
UTF-8; a sub-folder named `test/` or `validation/` turns into a split (`Unknown split "train"`), and a
`train/` plus `test/` pair silently drops the `test/` images. With `Image(decode=False)` it also only hands
back paths (bytes None), and keeps rows whose file is missing, so every check below was needed anyway.
Reading the file directly turns each of those into a counted, skipped sample, using imagefolder's rules
for `file_name`: also accepted as `<image_column>_file_name`, relative, not escaping the folder.

Every sample is checked (`images.load_rgb`, non-empty captions). Unusable ones are counted by reason in
`CaptionData.skipped`, never fatal, unless none remain or their share exceeds `max_bad_fraction`.
The valid examples are sorted by key and split with `split.split_indices`, so the split depends on the
data and the seed only, not on file-system or Hub row order.
"""
from __future__ import annotations

import collections
import contextlib
import csv
import hashlib
import json
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from blipexp.data.images import BadImage, load_rgb, read_image_file
from blipexp.data.split import split_indices
from blipexp.hub import hub_answers, looks_like_path

METADATA_JSONL = "metadata.jsonl"
CAPTIONS_CSV = "captions.csv"
SMALL_SPLIT = 10  # below this many images, corpus metrics such as CIDEr swing wildly between runs
HUB_FIXES = (
    "run with --tiny (the embedded dataset), or --set dataset=/path/to/folder "
    f"(a local folder with images and {METADATA_JSONL}, or with {CAPTIONS_CSV})"
)


class DataSourceError(ValueError):
    """The data cannot be loaded or used; the message names the problem and the fix."""


@dataclass(frozen=True)
class Example:
    """One validated image with its reference captions."""

    image: Image.Image  # RGB, EXIF orientation applied, fully loaded
    captions: tuple[str, ...]  # one or more, stripped, non-empty
    key: str  # relative file name in a folder, "row-<i>" for a Hub dataset


@dataclass
class CaptionData:
    """The validated, split examples of one source, with what was skipped and why."""

    train: list[Example]
    validation: list[Example]
    test: list[Example]
    skipped: collections.Counter  # reason -> number of samples skipped for it
    total: int  # samples seen before skipping (images, plus metadata rows that could not be read)
    fingerprint: str  # 16 hex chars: content of all valid examples plus the split parameters
    source: str  # the Hub id, or the folder's absolute path
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Sample:
    """A sample before validation: where its image is, its raw caption values, or a problem already known."""

    key: str
    image: Any = None  # bytes, a file path, or None
    captions: list[Any] = field(default_factory=list)  # raw values: str, list of str, None, ...
    problem: str | None = None  # a skip reason found while reading: bad_caption_encoding, missing_file, ...


# --- entry point


def load_caption_data(
    source: str,
    *,
    image_column: str = "image",
    caption_column: str = "text",
    hub_split: str = "train",
    revision: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.1,
    split_seed: int = 42,
    max_bad_fraction: float = 0.5,
) -> CaptionData:
    """Load, validate and split the image-caption pairs of `source` (a folder or a Hub dataset id)."""
    warnings: list[str] = []
    folder = Path(source).expanduser()
    if folder.is_dir():
        folder = folder.resolve()
        source_name = str(folder)
        samples = _read_folder(folder, image_column, caption_column, warnings)
    elif folder.exists():
        raise DataSourceError(
            f"dataset={source!r} is a file; it must be the folder holding the images and their "
            f"{METADATA_JSONL} or {CAPTIONS_CSV}. Fix: --set dataset={folder.resolve().parent}"
        )
    elif looks_like_path(source):
        raise DataSourceError(
            f"dataset folder not found: {folder.absolute()} (from dataset={source!r}). "
            f"Fix: check the path, or {HUB_FIXES}"
        )
    else:
        source_name = source
        samples = _read_hub(source, hub_split, revision, image_column, caption_column, warnings)

    valid, skipped = _validate(samples)
    _check_usable(source_name, len(samples), len(valid), skipped, max_bad_fraction)
    valid.sort(key=lambda item: item[0].key)  # a stable order, independent of file-system / row order
    examples = [example for example, _ in valid]
    try:
        train, val, test = split_indices(len(examples), val_fraction, test_fraction, split_seed)
    except ValueError as exc:
        raise DataSourceError(f"{source_name}: {exc}") from None
    warnings += _small_split_warnings(len(val), len(test))
    return CaptionData(
        train=[examples[i] for i in train],
        validation=[examples[i] for i in val],
        test=[examples[i] for i in test],
        skipped=skipped,
        total=len(samples),
        fingerprint=_fingerprint(valid, val_fraction, test_fraction, split_seed, None if folder.is_dir() else revision),
        source=source_name,
        warnings=warnings,
    )


# --- validation


def _validate(samples: list[_Sample]) -> tuple[list[tuple[Example, str]], collections.Counter]:
    """Decode and check every sample: (example, image-bytes sha256) pairs, and skip counts by reason."""
    valid: list[tuple[Example, str]] = []
    skipped: collections.Counter = collections.Counter()
    for sample in samples:
        try:
            valid.append(_to_example(sample))
        except (BadImage, _Skip) as exc:
            skipped[exc.reason] += 1
    return valid, skipped


class _Skip(Exception):
    """A sample unusable for a reason other than its image (caption, metadata row)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _to_example(sample: _Sample) -> tuple[Example, str]:
    if sample.problem is not None:
        raise _Skip(sample.problem)
    captions = _clean_captions(sample.captions)  # checked first: cheaper than decoding the image
    data = _image_bytes(sample.image)
    image = load_rgb(data)
    return Example(image=image, captions=captions, key=sample.key), hashlib.sha256(data).hexdigest()


def _clean_captions(values: list[Any]) -> tuple[str, ...]:
    """Flatten string / list-of-string values, strip them, drop empty ones; raise _Skip if none remain."""
    texts = [text for value in values for text in (value if isinstance(value, (list, tuple)) else [value])]
    texts = [text for text in texts if isinstance(text, str)]
    if not texts:
        raise _Skip("missing_caption")
    if any(_has_undecodable(text) for text in texts):
        raise _Skip("bad_caption_encoding")
    captions = tuple(text.strip() for text in texts if text.strip())
    if not captions:
        raise _Skip("empty_caption")
    return captions


def _has_undecodable(text: str) -> bool:
    """True if `text` holds lone surrogates: bytes that were not UTF-8 (read with errors="surrogateescape")."""
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _image_bytes(image: Any) -> bytes:
    """The encoded bytes of a sample's image: given directly, or read from its path."""
    if isinstance(image, dict):  # a Hub Image(decode=False) value: {"bytes": ..., "path": ...}
        image = image.get("bytes") or image.get("path")
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)) and os.fspath(image):
        return read_image_file(image)
    raise BadImage("missing_file", "no image in this sample")


def _check_usable(source: str, total: int, n_valid: int, skipped: collections.Counter, max_bad_fraction: float) -> None:
    counts = ", ".join(f"{reason}: {count}" for reason, count in skipped.most_common()) or "none"
    if n_valid == 0:
        raise DataSourceError(
            f"no usable image-caption pairs in {source}: {total} samples seen, skipped by reason: {counts}. "
            "Fix: image paths must be relative to the folder and point at readable images, and each needs a "
            f"non-empty caption; or {HUB_FIXES}"
        )
    n_bad = sum(skipped.values())
    if total and n_bad / total > max_bad_fraction:
        raise DataSourceError(
            f"{n_bad} of {total} samples ({n_bad / total:.0%}) in {source} are unusable, more than "
            f"max_bad_fraction={max_bad_fraction:g} ({counts}). Fix the data, or accept the loss with "
            f"--set max_bad_fraction={min(1.0, round(n_bad / total + 0.05, 2)):g}"
        )


def _small_split_warnings(n_val: int, n_test: int) -> list[str]:
    warnings = []
    if n_val < SMALL_SPLIT:
        warnings.append(
            f"the validation split has only {n_val} image(s): CIDEr is unstable on very small sets, so model "
            "selection by it is noisy; add images or raise val_fraction"
        )
    if 0 < n_test < SMALL_SPLIT:
        warnings.append(f"the test split has only {n_test} image(s): its metrics are a rough estimate")
    return warnings


def _fingerprint(valid: list[tuple[Example, str]], val_fraction: float, test_fraction: float, split_seed: int,
                 revision: str | None) -> str:
    """sha256 over the sorted (key, image-bytes hash, captions) of all valid examples, the split parameters and
    the Hub revision asked for (None for a folder, whose fingerprint is unchanged by it)."""
    content = sorted([example.key, image_hash, list(example.captions)] for example, image_hash in valid)
    payload = {"examples": content, "val_fraction": val_fraction, "test_fraction": test_fraction, "split_seed": split_seed}
    if revision is not None:
        payload["revision"] = revision
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]


# --- local folders


@dataclass
class _Row:
    """One metadata row: the image path as written, its caption value, or the problem that spoiled the row."""

    line: int
    file: Any = None
    caption: Any = None
    problem: str | None = None


def _read_folder(folder: Path, image_column: str, caption_column: str, warnings: list[str]) -> list[_Sample]:
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


def _group_rows(folder: Path, rows: list[_Row]) -> list[_Sample]:
    """One sample per image file (its rows' captions in order); each unreadable row is a sample of its own."""
    by_file: dict[str, _Sample] = {}
    broken: list[_Sample] = []
    for row in rows:
        relative = None if row.problem else _relative_path(row.file)
        if relative is None:  # a row we could not read, or no usable path in it
            broken.append(_Sample(key=f"line-{row.line}", problem=row.problem or "missing_file"))
            continue
        sample = by_file.setdefault(relative, _Sample(key=relative, image=folder / relative))
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
        if _has_undecodable(line):
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
        raise _missing_column(path, "image", image_column, columns, 'name it "file_name" (imagefolder\'s convention), or')
    if caption_column not in columns:
        raise _missing_column(path, "caption", caption_column, columns)
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
                raise _missing_column(path, role, name, columns)
        image_at, caption_at = columns.index(image_column), columns.index(caption_column)
        rows = []
        for values in reader:
            if not any(value.strip() for value in values):
                continue  # blank line
            if any(_has_undecodable(value) for value in values):
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


def _missing_column(path: Path | str, role: str, name: str, columns: list[str], extra_fix: str = "") -> DataSourceError:
    available = ", ".join(repr(column) for column in columns) or "none"
    setting = f"{role}_column"
    return DataSourceError(
        f"{path} has no {role} column {name!r}; its columns are: {available}. "
        f"Fix: {extra_fix + ' ' if extra_fix else ''}--set {setting}=<one of those columns>"
    )


# --- Hub datasets


def _read_hub(
    source: str, split: str, revision: str | None, image_column: str, caption_column: str, warnings: list[str]
) -> list[_Sample]:
    import datasets  # deferred: importing datasets costs about a second

    dataset = _load_hub_dataset(source, split, revision, warnings)
    columns = list(dataset.column_names)
    for role, name in (("image", image_column), ("caption", caption_column)):
        if name not in columns:
            raise _missing_column(f"Hub dataset {source!r} (split {split!r})", role, name, columns)
    dataset = dataset.select_columns([image_column, caption_column])
    if isinstance(dataset.features[image_column], datasets.Image):
        # Undecoded ({"bytes", "path"}), so a corrupt image is ours to count, not a crash inside datasets.
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    return [
        _Sample(key=f"row-{index}", image=row[image_column], captions=[row[caption_column]])
        for index, row in enumerate(dataset)
    ]


def _load_hub_dataset(source: str, split: str, revision: str | None, warnings: list[str]) -> Any:
    """`datasets.load_dataset`, failing within seconds when the Hub is unreachable and nothing is cached.

    Without network, load_dataset retries for ~25 s before it looks in the cache. So one short request
    checks the Hub first; when it gets no answer, loading runs in offline mode: from the cache, or failing at once.
    """
    import datasets

    requested = _offline_requested()
    unreachable = not requested and not _hub_answers(source, revision)
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


def _hub_failure_message(source: str, split: str, offline: bool, exc: Exception) -> str:
    where = "the local cache (the Hub is unreachable or offline mode is on)" if offline else "the Hub or the local cache"
    message = f"could not load dataset {source!r} (split {split!r}) from {where}: {type(exc).__name__}: {exc}. "
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


def _hub_answers(source: str, revision: str | None) -> bool:
    from huggingface_hub.errors import HFValidationError

    try:
        return hub_answers(source, "dataset", revision)
    except HFValidationError as exc:
        raise DataSourceError(
            f"dataset={source!r} is neither an existing folder nor a valid Hub dataset id ({exc}). Fix: {HUB_FIXES}"
        ) from None


@contextlib.contextmanager
def _offline_mode(enabled: bool) -> Iterator[None]:
    """Turn the Hub's offline mode on for one load: both libraries read a module flag they set at import."""
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
