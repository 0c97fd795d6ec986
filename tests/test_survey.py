"""The first look at a dataset's images: checked once, reused while unchanged, checked again when changed."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from blipexp.data.sources import FileImages, load_caption_data
from blipexp.data.survey import CHUNK, IN_PROCESS_BELOW, record_path, survey


def photo(path: Path, seed: int, size=(64, 48)) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG")


def photo_folder(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:05d}.jpg" for i in range(n)]
    for i, path in enumerate(paths):
        photo(path, i)
    (folder / "captions.csv").write_text("image,text\n" + "".join(f"{p.name},photo {i}\n" for i, p in enumerate(paths)))
    return paths


def test_a_second_look_reuses_every_check_and_a_changed_file_is_checked_again(tmp_path: Path):
    paths = photo_folder(tmp_path / "photos", 12)
    cache = tmp_path / "cache"
    first = load_caption_data(str(tmp_path / "photos"), cache_dir=cache, progress=False)
    assert (first.survey.checked, first.survey.reused) == (12, 0)
    again = load_caption_data(str(tmp_path / "photos"), cache_dir=cache, progress=False)
    assert (again.survey.checked, again.survey.reused) == (0, 12)
    assert again.fingerprint == first.fingerprint

    data = paths[3].read_bytes()
    paths[3].write_bytes(data[: len(data) // 2])  # truncated: size and mtime change
    os.utime(paths[5], ns=(1, 1))  # same content, other mtime: looked at again, still fine
    changed = load_caption_data(str(tmp_path / "photos"), cache_dir=cache, progress=False)
    assert (changed.survey.checked, changed.survey.reused) == (2, 10)
    assert changed.skipped == {"truncated": 1} and changed.fingerprint != first.fingerprint


def test_without_a_cache_folder_every_image_is_checked_each_time(tmp_path: Path):
    photo_folder(tmp_path / "photos", 3)
    for _ in range(2):
        data = load_caption_data(str(tmp_path / "photos"), progress=False)
        assert data.survey.checked == 3


def test_many_images_are_checked_in_worker_processes_with_the_same_result(tmp_path: Path):
    n = IN_PROCESS_BELOW + CHUNK  # over the threshold: a process pool
    paths = photo_folder(tmp_path / "photos", n)
    paths[7].write_bytes(b"")
    paths[n - 2].write_text("not an image")
    items = [(p.name, str(p)) for p in paths]
    pooled = survey(items, FileImages(), None, progress=False)
    in_process = {key: survey([(key, ref)], FileImages(), None, progress=False).checks[key] for key, ref in items[:10]}
    assert all(pooled.checks[key] == check for key, check in in_process.items())
    assert pooled.checks[paths[7].name].reason == "zero_byte"
    assert pooled.checks[paths[n - 2].name].reason == "not_an_image"
    assert sum(c.reason is None for c in pooled.checks.values()) == n - 2


def test_a_damaged_record_is_ignored_and_rewritten(tmp_path: Path):
    photo_folder(tmp_path / "photos", 4)
    cache = tmp_path / "cache"
    load_caption_data(str(tmp_path / "photos"), cache_dir=cache, progress=False)
    record = record_path(cache, str((tmp_path / "photos").resolve()))
    record.write_text("{ not json")
    data = load_caption_data(str(tmp_path / "photos"), cache_dir=cache, progress=False)
    assert data.survey.checked == 4
    assert load_caption_data(str(tmp_path / "photos"), cache_dir=cache, progress=False).survey.reused == 4


def test_images_are_not_kept_in_memory(tmp_path: Path):
    photo_folder(tmp_path / "photos", 6)
    data = load_caption_data(str(tmp_path / "photos"), progress=False)
    example = data.train[0]
    assert not any(isinstance(v, Image.Image) for v in vars(example).values())
    image = data.image(example)
    assert image.mode == "RGB" and image.size == (64, 48)
    assert isinstance(io.BytesIO(data.images.read(example.ref)).read(3), bytes)
