"""List, check and split the image-caption pairs of a local folder or a Hub dataset; never hold the images.

`load_caption_data(source)` picks the source: an existing folder (its layouts: `blipexp.data.folder`), or
otherwise a Hub dataset id (`blipexp.data.hub_dataset`, kept as memory-mapped Arrow).

Every sample is checked: non-empty captions here, its image by the first look (`blipexp.data.survey`: read,
hashed and test-decoded once, in parallel, remembered between runs). Unusable ones are counted by reason in
`CaptionData.skipped`, never fatal, unless none remain or their share exceeds `max_bad_fraction`. The valid
examples are sorted by key and split: the dataset's own splits when it has them (`splits`), else
`split.split_indices`, so the split depends on the data and the seed only, not on file-system or Hub row order.
An `Example` holds where its image is, not the image: `CaptionData.image(example)` decodes it when needed.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from blipexp.data.folder import CAPTIONS_CSV, METADATA_JSONL, read_folder
from blipexp.data.hub import looks_like_path
from blipexp.data.hub_dataset import HUB_FIXES, ArrowImages, read_hub
from blipexp.data.images import load_rgb, read_image_file
from blipexp.data.sample import DataSourceError, Sample, has_undecodable
from blipexp.data.split import split_indices
from blipexp.data.survey import ImageReader, SurveyReport, record_path, survey

SMALL_SPLIT = 10  # below this many images, corpus metrics such as CIDEr swing wildly between runs
SPLIT_MODES = ("auto", "own", "random")


@dataclass(frozen=True)
class Example:
    """One validated image-caption sample. The image itself is not held: `CaptionData.image(example)` decodes
    it when asked (a DataLoader worker, mostly), so memory does not grow with the dataset."""

    key: str  # relative file name in a folder, "row-<i>" for a Hub dataset
    captions: tuple[str, ...]  # one or more, stripped, non-empty
    ref: Any  # where `CaptionData.images` reads the image: a file path, or an Arrow row index


class FileImages:
    """A folder's images: read from their files. `stamp` (size, mtime) tells the first look when one changed."""

    def read(self, ref: str) -> bytes:
        return read_image_file(ref)

    def stamp(self, ref: str) -> tuple[int, int] | None:
        try:
            stat = os.stat(ref)
        except OSError:
            return None
        return stat.st_size, stat.st_mtime_ns


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
    images: ImageReader = field(default_factory=FileImages)  # reads an example's encoded image
    splits: str = "random"  # "own": the dataset's own train/validation/test; "random": blipexp's seeded split
    warnings: list[str] = field(default_factory=list)
    survey: SurveyReport | None = None  # what the first look at the images checked and reused
    digests: dict[str, str] = field(default_factory=dict)  # sha256 of each valid example's encoded image, by key
    split_settings: dict[str, Any] = field(default_factory=dict)  # what the fingerprint holds besides the examples

    def image(self, example: Example) -> Image.Image:
        """The example's picture, decoded now (RGB, EXIF orientation applied). Raises BadImage."""
        return load_rgb(self.images.read(example.ref))


# --- entry point


def load_caption_data(
    source: str,
    *,
    image_column: str = "image",
    caption_column: str = "text",
    hub_split: str = "train",
    revision: str | None = None,
    splits: str = "auto",
    val_fraction: float = 0.2,
    test_fraction: float = 0.1,
    split_seed: int = 42,
    max_bad_fraction: float = 0.5,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> CaptionData:
    """List, check and split the image-caption pairs of `source` (a folder or a Hub dataset id).

    Images are checked once (in parallel; the result is kept under `cache_dir` and reused while the data are
    unchanged), never held in memory. `splits`: "own" uses the dataset's own train/validation/test splits,
    "random" a seeded split of all of it, "auto" the own ones when the dataset has a held-out split."""
    if splits not in SPLIT_MODES:
        raise DataSourceError(f"splits={splits!r} must be one of {', '.join(SPLIT_MODES)}")
    warnings: list[str] = []
    samples, images, source_name, source_id = _read(source, image_column, caption_column, hub_split, revision,
                                                     splits, warnings)
    valid, skipped, report = _checked(samples, images, record_path(cache_dir, source_id), progress)
    _check_usable(source_name, len(samples), len(valid), skipped, max_bad_fraction)
    if isinstance(images, ArrowImages):  # a folder groups its rows by file name already (folder.py)
        valid = group_same_images(valid, warnings)
    valid.sort(key=lambda item: item[0].key)  # a stable order, independent of file-system / row order
    (train, val, test), how = _split(valid, splits, val_fraction, test_fraction, split_seed, source_name, warnings)
    warnings += _small_split_warnings(len(val), len(test))
    settings = {"splits": how, "val_fraction": val_fraction, "test_fraction": test_fraction, "split_seed": split_seed}
    if revision is not None and not isinstance(images, FileImages):  # a folder has no revision
        settings["revision"] = revision
    return CaptionData(
        train=train,
        validation=val,
        test=test,
        skipped=skipped,
        total=len(samples),
        fingerprint=_fingerprint(valid, settings),
        source=source_name,
        images=images,
        splits=how,
        warnings=warnings,
        survey=report,
        digests={example.key: digest for example, digest, _ in valid},
        split_settings=settings,
    )


def _checked(samples: list[Sample], images: ImageReader, record: Path | None,
             progress: bool) -> tuple[list[tuple[Example, str, str | None]], collections.Counter, SurveyReport]:
    """The usable samples as (example, image digest, own split), the skips by reason, and the images' survey."""
    skipped: collections.Counter = collections.Counter()
    listed: list[tuple[Sample, tuple[str, ...]]] = []
    for sample in samples:
        try:
            listed.append((sample, _usable_captions(sample)))  # captions first: cheaper than the image
        except _Skip as exc:
            skipped[exc.reason] += 1
    report = survey([(sample.key, sample.image) for sample, _ in listed], images, record, progress=progress)
    valid: list[tuple[Example, str, str | None]] = []  # (example, image digest, own split)
    for sample, captions in listed:
        check = report.checks[sample.key]
        if check.reason is not None:
            skipped[check.reason] += 1
        else:
            valid.append((Example(key=sample.key, captions=captions, ref=sample.image), check.digest, sample.split))
    return valid, skipped, report


def _read(source: str, image_column: str, caption_column: str, hub_split: str, revision: str | None, splits: str,
          warnings: list[str]) -> tuple[list[Sample], ImageReader, str, str]:
    """(samples, their image reader, the source's name, an id for the first look's record) of a folder or Hub id."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        folder = folder.resolve()
        return read_folder(folder, image_column, caption_column, warnings), FileImages(), str(folder), str(folder)
    if folder.exists():
        raise DataSourceError(
            f"dataset={source!r} is a file; it must be the folder holding the images and their "
            f"{METADATA_JSONL} or {CAPTIONS_CSV}. Fix: --set dataset={folder.resolve().parent}"
        )
    if looks_like_path(source):
        raise DataSourceError(
            f"dataset folder not found: {folder.absolute()} (from dataset={source!r}). "
            f"Fix: check the path, or {HUB_FIXES}"
        )
    samples, images, table_id = read_hub(source, split=hub_split, revision=revision, image_column=image_column,
                                         caption_column=caption_column, own_splits=splits != "random",
                                         warnings=warnings)
    return samples, images, source, f"hub:{source}@{revision}:{table_id}"


def _split(valid: list[tuple[Example, str, str | None]], mode: str, val_fraction: float, test_fraction: float,
           seed: int, source: str, warnings: list[str]) -> tuple[tuple[list[Example], ...], str]:
    """(train, validation, test) and how they were made: the dataset's own splits, or a seeded random split."""
    labels = {split for _, _, split in valid if split}
    held_out = labels & {"validation", "test"}
    if mode == "own" and not held_out:
        raise DataSourceError(f"splits=own, but {source} has no own validation or test split (found: "
                              f"{', '.join(sorted(labels)) or 'none'}). Fix: --set splits=random (blipexp's seeded "
                              "split), or give the data train/validation/test splits (README 'Bringing your own data')")
    examples = [example for example, _, _ in valid]
    if mode == "random" or not held_out:
        return _random_split(examples, val_fraction, test_fraction, seed, source), "random"
    parts = {name: [e for e, _, split in valid if split == name] for name in ("train", "validation", "test")}
    unlabelled = [e for e, _, split in valid if not split]
    if unlabelled:
        warnings.append(f"{len(unlabelled)} image(s) name no split: they are used for training")
        parts["train"] += unlabelled
    missing = [name for name, fraction in (("validation", val_fraction), ("test", test_fraction))
               if not parts[name] and fraction > 0]
    if missing:  # e.g. COCO 2017: train and val only; the missing split is carved from train, seeded
        carve = {name: (val_fraction if name == "validation" else test_fraction) for name in missing}
        rest, val, test = _random_split(parts["train"], carve.get("validation", 0.0), carve.get("test", 0.0), seed,
                                        source)
        parts["train"] = rest
        parts.update({name: chosen for name, chosen in (("validation", val), ("test", test)) if name in missing})
        warnings.append(f"the data have no own {' or '.join(missing)} split: carved from its train split "
                        f"(seeded, split_seed={seed})")
    return (parts["train"], parts["validation"], parts["test"]), "own"


def _random_split(examples: list[Example], val_fraction: float, test_fraction: float, seed: int,
                  source: str) -> tuple[list[Example], list[Example], list[Example]]:
    try:
        train, val, test = split_indices(len(examples), val_fraction, test_fraction, seed)
    except ValueError as exc:
        raise DataSourceError(f"{source}: {exc}") from None
    return [examples[i] for i in train], [examples[i] for i in val], [examples[i] for i in test]


# --- validation


class _Skip(Exception):
    """A sample unusable for a reason other than its image (caption, metadata row)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _usable_captions(sample: Sample) -> tuple[str, ...]:
    if sample.problem is not None:
        raise _Skip(sample.problem)
    return _clean_captions(sample.captions)


def _clean_captions(values: list[Any]) -> tuple[str, ...]:
    """Flatten string / list-of-string values, strip them, drop empty ones; raise _Skip if none remain."""
    texts = [text for value in values for text in (value if isinstance(value, (list, tuple)) else [value])]
    texts = [text for text in texts if isinstance(text, str)]
    if not texts:
        raise _Skip("missing_caption")
    if any(has_undecodable(text) for text in texts):
        raise _Skip("bad_caption_encoding")
    captions = tuple(text.strip() for text in texts if text.strip())
    if not captions:
        raise _Skip("empty_caption")
    return captions


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


def group_same_images(valid: list[tuple[Example, str, str | None]],
                      warnings: list[str]) -> list[tuple[Example, str, str | None]]:
    """Rows holding the same image (equal content digests) as one example whose captions are all their captions.

    Many captioning datasets store one row per caption (five per image): split row by row, an image's rows would
    land in train and in validation/test, and its test captions would be scored on a model trained on its picture.
    The first row of an image gives the key, the image and, for a dataset's own splits, the split; an image found in
    two of the dataset's own splits is kept in the first and counted in a warning."""
    grouped: dict[str, tuple[Example, str, str | None]] = {}
    merged = crossing = 0
    for example, digest, split in valid:
        first = grouped.get(digest)
        if first is None:
            grouped[digest] = (example, digest, split)
            continue
        merged += 1
        crossing += split != first[2]
        captions = tuple(dict.fromkeys(first[0].captions + example.captions))  # in order, each once
        grouped[digest] = (Example(first[0].key, captions, first[0].ref), digest, first[2])
    if merged:
        warnings.append(f"{merged} row(s) hold an image another row holds: grouped into {len(grouped)} images, each "
                        "with all its rows' captions as references (split by image, so no image is in two splits)")
    if crossing:
        warnings.append(f"{crossing} row(s) repeat an image of another of the dataset's own splits: each image kept "
                        "in the split of its first row (the dataset's own splits leak these images)")
    return list(grouped.values())


def _small_split_warnings(n_val: int, n_test: int) -> list[str]:
    warnings = []
    if n_val < SMALL_SPLIT:
        warnings.append(
            f"the validation split has only {n_val} image(s), so its scores carry little evidence: each image is "
            f"1/{n_val} of every score, one caption more or less right moves the objective by that much, and CIDEr "
            "is unstable on very small sets (blipexp then takes its idf from the training captions: cider_df). "
            "Read the best trial as a hint, not a finding; add images or raise val_fraction"
        )
    if 0 < n_test < SMALL_SPLIT:
        warnings.append(f"the test split has only {n_test} image(s): its metrics are a rough estimate")
    return warnings


def _fingerprint(valid: list[tuple[Example, str, str | None]], settings: dict[str, Any]) -> str:
    """sha256 over the sorted (key, image-bytes hash, captions, own split) of all valid examples and the split
    settings (and the Hub revision asked for)."""
    content = sorted([example.key, digest, list(example.captions), split] for example, digest, split in valid)
    payload = {"examples": content, **settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]
