"""load_caption_data: local folders (metadata.jsonl, captions.csv) and the Hub path, all offline."""
from __future__ import annotations

import csv
import io
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blipexp.data.sources import CaptionData, DataSourceError, load_caption_data

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop


def save_image(path: Path, shade: int, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (shade, 255 - shade, 40)).save(path, fmt)


def write_jsonl(folder: Path, rows: list[dict]) -> None:
    (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def good_folder(folder: Path, n: int = 12) -> list[str]:
    """n valid images with one caption each in metadata.jsonl; returns their file names."""
    names = [f"img_{i:02d}.png" for i in range(n)]
    for i, name in enumerate(names):
        save_image(folder / name, shade=i * 10)
    write_jsonl(folder, [{"file_name": name, "text": f"  picture number {i}  "} for i, name in enumerate(names)])
    return names


def all_keys(data: CaptionData) -> list[str]:
    return [example.key for example in data.train + data.validation + data.test]


# --- imagefolder layout (metadata.jsonl)


def test_imagefolder_loads_good_images_and_counts_bad_ones(tmp_path: Path):
    names = good_folder(tmp_path)
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    save_image(tmp_path / "blank_caption.png", 0)
    bad_rows = [
        {"file_name": "zero.png", "text": "zero bytes"},
        {"file_name": "text.png", "text": "a text file"},
        {"file_name": "cut.jpg", "text": "half a jpeg"},
        {"file_name": "gone.png", "text": "deleted file"},
        {"file_name": "blank_caption.png", "text": "   "},
        {"file_name": "no_caption_value.png"},
        {"file_name": "../outside.png", "text": "escapes the folder"},
    ]
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    write_jsonl(tmp_path, rows + bad_rows)
    with open(tmp_path / "metadata.jsonl", "a", encoding="utf-8") as handle:
        handle.write("{this line is not json\n")

    data = load_caption_data(str(tmp_path))

    assert sorted(all_keys(data)) == names
    assert data.skipped == {
        "zero_byte": 1, "not_an_image": 1, "truncated": 1, "missing_file": 2,
        "empty_caption": 1, "missing_caption": 1, "bad_metadata_row": 1,
    }
    assert data.total == len(names) + 8
    assert data.source == str(tmp_path.resolve())
    example = data.train[0]
    image = data.image(example)
    assert image.mode == "RGB" and image.size == (8, 6)
    assert example.captions[0].startswith("picture number") and example.captions[0] == example.captions[0].strip()


def test_split_is_deterministic_and_warns_on_small_validation(tmp_path: Path):
    good_folder(tmp_path, n=20)
    first, second = load_caption_data(str(tmp_path)), load_caption_data(str(tmp_path))
    assert [e.key for e in first.validation] == [e.key for e in second.validation]
    assert (len(first.train), len(first.validation), len(first.test)) == (14, 4, 2)
    assert len(set(all_keys(first))) == 20
    other_seed = load_caption_data(str(tmp_path), split_seed=43)
    assert [e.key for e in other_seed.validation] != [e.key for e in first.validation]
    assert any("carry little evidence" in w and "CIDEr is unstable" in w for w in first.warnings)


def test_multiple_references_as_json_list_and_repeated_rows(tmp_path: Path):
    for name in ("a.png", "b.png", "c.png"):
        save_image(tmp_path / name, 50)
    write_jsonl(tmp_path, [
        {"file_name": "a.png", "text": ["first ref", " second ref ", ""]},  # a list, mixed with plain strings below
        {"file_name": "b.png", "text": "only ref"},
        {"file_name": "c.png", "text": "ref one"},
        {"file_name": "c.png", "text": "ref two"},
    ])
    data = load_caption_data(str(tmp_path), val_fraction=0.3, test_fraction=0.0)
    by_key = {example.key: example.captions for example in data.train + data.validation}
    assert by_key == {"a.png": ("first ref", "second ref"), "b.png": ("only ref",), "c.png": ("ref one", "ref two")}
    assert data.total == 3 and not data.skipped


def test_subfolders_named_like_splits_are_just_folders(tmp_path: Path):
    # datasets' imagefolder turns a "test/" folder into a split; here it is only a path.
    save_image(tmp_path / "test" / "x.png", 10)
    save_image(tmp_path / "train" / "y.png", 20)
    save_image(tmp_path / "z.png", 30)
    write_jsonl(tmp_path, [{"file_name": "test/x.png", "text": "x"}, {"file_name": "train/y.png", "text": "y"},
                           {"file_name": "./z.png", "text": "z"}])
    data = load_caption_data(str(tmp_path))
    assert sorted(all_keys(data)) == ["test/x.png", "train/y.png", "z.png"]


# --- captions.csv layout


def write_csv(folder: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(folder / "captions.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_captions_csv_groups_repeated_rows_and_skips_non_utf8_row(tmp_path: Path):
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        save_image(tmp_path / name, 90, fmt="JPEG")
    write_csv(tmp_path, ["image", "text"], [
        ["a.jpg", "a dog, running"],  # a comma inside a quoted field
        ["b.jpg", "a cat"],
        ["a.jpg", "a dog on grass"],
        ["c.jpg", "a bird"],
    ])
    with open(tmp_path / "captions.csv", "ab") as handle:
        handle.write(b"d.jpg,caf\xe9 in latin-1\r\n")  # not UTF-8

    data = load_caption_data(str(tmp_path), val_fraction=0.3, test_fraction=0.0)

    by_key = {example.key: example.captions for example in data.train + data.validation}
    assert by_key == {"a.jpg": ("a dog, running", "a dog on grass"), "b.jpg": ("a cat",), "c.jpg": ("a bird",)}
    assert data.skipped == {"bad_caption_encoding": 1}
    assert data.total == 4


def test_captions_csv_with_byte_order_mark_and_other_columns(tmp_path: Path):
    for name in ("a.png", "b.png", "c.png"):
        save_image(tmp_path / name, 5)
    rows = "\ufeffpath,caption\na.png,one\nb.png,two\nc.png,three\n"  # Excel writes a BOM
    (tmp_path / "captions.csv").write_text(rows, encoding="utf-8")
    data = load_caption_data(str(tmp_path), image_column="path", caption_column="caption")
    assert sorted(all_keys(data)) == ["a.png", "b.png", "c.png"]


def test_missing_caption_column_names_available_columns(tmp_path: Path):
    save_image(tmp_path / "a.png", 5)
    write_csv(tmp_path, ["image", "description"], [["a.png", "one"]])
    with pytest.raises(DataSourceError) as caught:
        load_caption_data(str(tmp_path))
    message = str(caught.value)
    assert "'text'" in message and "'image'" in message and "'description'" in message
    assert "--set caption_column=" in message


def test_missing_image_column_names_available_columns(tmp_path: Path):
    write_csv(tmp_path, ["filename", "text"], [["a.png", "one"]])
    with pytest.raises(DataSourceError, match=r"'filename'.*--set image_column="):
        load_caption_data(str(tmp_path))


def test_missing_caption_column_in_jsonl(tmp_path: Path):
    save_image(tmp_path / "a.png", 5)
    write_jsonl(tmp_path, [{"file_name": "a.png", "caption": "one"}])
    with pytest.raises(DataSourceError, match=r"'caption'.*--set caption_column="):
        load_caption_data(str(tmp_path))


def test_folder_without_metadata_names_both_layouts(tmp_path: Path):
    save_image(tmp_path / "a.png", 5)
    with pytest.raises(DataSourceError) as caught:
        load_caption_data(str(tmp_path))
    assert "metadata.jsonl" in str(caught.value) and "captions.csv" in str(caught.value)


# --- quality gates


def test_no_valid_images_names_the_reasons(tmp_path: Path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_text("text")
    write_jsonl(tmp_path, [{"file_name": "a.png", "text": "x"}, {"file_name": "b.png", "text": "y"}])
    with pytest.raises(DataSourceError, match=r"no usable .*zero_byte: 1.*not_an_image: 1|no usable .*not_an_image: 1.*zero_byte: 1"):
        load_caption_data(str(tmp_path))


def test_bad_share_above_max_bad_fraction(tmp_path: Path):
    good_folder(tmp_path, n=4)
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    write_jsonl(tmp_path, rows + [{"file_name": f"gone_{i}.png", "text": "x"} for i in range(6)])
    with pytest.raises(DataSourceError) as caught:
        load_caption_data(str(tmp_path), max_bad_fraction=0.5)
    message = str(caught.value)
    assert "6 of 10" in message and "60%" in message and "missing_file: 6" in message
    assert "--set max_bad_fraction=" in message
    assert len(all_keys(load_caption_data(str(tmp_path), max_bad_fraction=0.7))) == 4


def test_too_few_images_to_split(tmp_path: Path):
    good_folder(tmp_path, n=2)
    with pytest.raises(DataSourceError, match="at least 3 are needed"):
        load_caption_data(str(tmp_path))


# --- fingerprint


def test_fingerprint_is_stable_and_follows_content(tmp_path: Path):
    folder = tmp_path / "data"
    good_folder(folder, n=6)
    first = load_caption_data(str(folder)).fingerprint
    assert len(first) == 16 and load_caption_data(str(folder)).fingerprint == first
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert load_caption_data(str(copy)).fingerprint == first  # content, not location
    assert load_caption_data(str(folder), split_seed=1).fingerprint != first

    metadata = folder / "metadata.jsonl"
    metadata.write_text(metadata.read_text().replace("picture number 3", "picture number three"))
    assert load_caption_data(str(folder)).fingerprint != first


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """datasets.load_dataset replaced by one that records its arguments and returns ten good rows (no network)."""
    import datasets

    images = []
    for i in range(10):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 6), (i * 20, 100, 40)).save(buffer, "PNG")
        images.append(buffer.getvalue())
    rows = {"image": images, "text": [f"scene {i}" for i in range(10)]}
    calls: list[dict] = []

    def load_dataset(path, **kwargs):
        calls.append({"path": path, **kwargs})
        table = datasets.Dataset.from_dict(rows)
        return table if kwargs.get("split") else datasets.DatasetDict({"train": table})  # split=None: all of them

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_load_data_asks_the_hub_for_the_dataset_revision(fake_hub: list[dict], tmp_path: Path):
    from blipexp.data import load_data
    from blipexp.experiment.spec import ExperimentSpec

    spec = ExperimentSpec(dataset="someone/captions", dataset_revision="v1.2", test_fraction=0.0)
    data = load_data(spec, tmp_path)
    assert [(call["path"], call["revision"]) for call in fake_hub] == [("someone/captions", "v1.2")]
    assert len(data.train) + len(data.validation) == 10


def test_hub_fingerprint_follows_the_revision(fake_hub: list[dict]):
    first = load_caption_data("someone/captions", revision="v1").fingerprint
    assert load_caption_data("someone/captions", revision="v1").fingerprint == first
    assert load_caption_data("someone/captions", revision="v2").fingerprint != first  # same rows, other revision


# --- Hub and path handling


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """HF_HUB_OFFLINE=1 set after import, and an empty datasets cache, so nothing is looked up or found.

    Both libraries copy HF_HUB_OFFLINE into a module flag at import; the flags are set to False here so the
    test does not depend on import order or on a conftest: the loader must notice the variable itself.
    """
    import datasets
    from huggingface_hub import constants

    cache = tmp_path / "hf-datasets-cache"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    return cache


def test_unreachable_hub_dataset_fails_fast_with_fixes(offline_hub: Path):
    import datasets  # noqa: F401  (imported before timing: the import itself takes about a second)

    started = time.monotonic()
    with pytest.raises(DataSourceError) as caught:
        load_caption_data("blipexp-tests/no-such-dataset")
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "--tiny" in message and "--set dataset=" in message
    assert "Hub" in message and "cache" in message


def test_cached_hub_dataset_loads_offline(offline_hub: Path, tmp_path: Path):
    """A Hub dataset already in the cache loads without network (datasets' cache layout, built here)."""
    import datasets

    source = tmp_path / "source"
    good_folder(source, n=6)
    built = datasets.load_dataset("imagefolder", data_dir=str(source), split="train", cache_dir=str(tmp_path / "built"))
    arrow_dir = Path(built.cache_files[0]["filename"]).parent
    cached = offline_hub / "someone___captions" / "default" / arrow_dir.parent.name / arrow_dir.name
    shutil.copytree(arrow_dir, cached)
    info = json.loads((cached / "dataset_info.json").read_text())
    (cached / "dataset_info.json").write_text(json.dumps({**info, "config_name": "default"}))
    for arrow in cached.glob("imagefolder-*.arrow"):
        arrow.rename(arrow.with_name(arrow.name.replace("imagefolder-", "captions-")))

    started = time.monotonic()
    data = load_caption_data("someone/captions")
    assert time.monotonic() - started < 10
    assert sorted(all_keys(data)) == [f"row-{i}" for i in range(6)]
    assert data.source == "someone/captions"
    assert datasets.config.HF_HUB_OFFLINE is False  # offline mode was forced for the load only
    from huggingface_hub import constants
    assert constants.HF_HUB_OFFLINE is False


def test_dataset_pointing_at_a_file_names_its_folder(tmp_path: Path):
    write_csv(tmp_path, ["image", "text"], [["a.png", "one"]])
    with pytest.raises(DataSourceError, match=f"is a file.*--set dataset={tmp_path.resolve()}"):
        load_caption_data(str(tmp_path / "captions.csv"))


@pytest.mark.parametrize("path", ["./no-such-folder", "~/no-such-folder-blipexp", "/no/such/folder", "a/b/c"])
def test_missing_local_path_is_not_looked_up_on_the_hub(path: str):
    with pytest.raises(DataSourceError, match="folder not found"):
        load_caption_data(path)


# --- at scale, end to end: a few hundred files, a realistic mix of bad ones, through `blipexp run`


def hostile_folder(folder: Path) -> tuple[int, dict[str, int]]:
    """captions.csv over 200 samples: 160 usable (odd modes and very long captions among them), 40 bad.
    Returns the number of usable samples and the expected skip counts by reason."""
    from test_images import encode, noise, png_header_only

    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    odd = {  # usable after conversion to RGB
        "cmyk.jpg": lambda i: Image.new("CMYK", (24, 24), (i % 255, 40, 90, 10)),
        "palette.png": lambda i: _palette_with_transparency(i),
        "gray16.png": lambda i: Image.fromarray((rng.integers(0, 65535, (24, 24))).astype(np.uint16)),
        "la.png": lambda i: Image.new("LA", (24, 24), (i % 255, 128)),
    }
    rows: list[tuple[str, bytes | str]] = []  # (file name, caption) in csv order; bytes: a raw non-UTF-8 caption
    _mkdir(folder / "ok")
    for i in range(160):
        kind = list(odd)[i // 10 % 4] if i % 10 == 0 else None  # 16 images in odd modes
        name = f"ok/{i:03d}-{kind or 'rgb.png'}"
        (odd[kind](i) if kind else Image.new("RGB", (24, 24), (i, 255 - i, (7 * i) % 255))).save(folder / name)
        caption = " ".join(["a long caption"] * 400) if i % 20 == 5 else f"scene {i} with a green pitch"
        rows.append((name, caption))
    bad: dict[str, int] = {}

    def add(reason: str, n: int, name: str, data: bytes | None, caption: bytes | str = "a broken sample") -> None:
        bad[reason] = n
        for i in range(n):
            path = f"bad/{reason}-{i}-{name}"
            if data is not None:
                _mkdir(folder / "bad")
                (folder / path).write_bytes(data)
            rows.append((path, caption))

    jpeg = encode(noise((48, 48)), "JPEG")
    add("zero_byte", 7, "empty.png", b"")
    add("truncated", 7, "cut.jpg", jpeg[: len(jpeg) // 2])
    add("not_an_image", 6, "notes.png", b"just some text, not pixels")
    add("too_large", 5, "bomb.png", png_header_only(20000, 10000))  # decompression-bomb sized
    add("missing_file", 5, "gone.png", None)
    add("empty_caption", 5, "blank.png", encode(Image.new("RGB", (24, 24)), "PNG"), caption="   ")
    add("bad_caption_encoding", 5, "latin1.png", encode(Image.new("RGB", (24, 24)), "PNG"),
        caption="une \xe9quipe en rouge".encode("latin-1"))
    random.Random(3).shuffle(rows)
    with open(folder / "captions.csv", "wb") as handle:
        handle.write(b"image,text\n")
        for name, caption in rows:
            text = caption if isinstance(caption, bytes) else caption.encode("utf-8")
            handle.write(name.encode() + b',"' + text + b'"\n')
    return 160, bad


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _palette_with_transparency(i: int) -> Image.Image:
    image = Image.new("P", (24, 24), 1)
    image.putpalette([0, 0, 0, 255, i % 255, 0] + [0] * 762)
    image.info["transparency"] = 0
    return image


def test_a_folder_of_hundreds_with_a_share_of_bad_files_trains_or_aborts(tmp_path: Path, capsys, home: Path):
    import mlflow

    from blipexp import cli, tracking

    folder = tmp_path / "photos"
    usable, bad = hostile_folder(folder)
    total = usable + sum(bad.values())
    argv = ["run", "football_baseline", "--tiny", "--home", str(home), "--experiments",
            str(Path(__file__).parent.parent / "experiments"), "--set", f"dataset={folder}", "--set", "epochs=1"]

    assert cli.main(argv + ["--set", "max_bad_fraction=0.1"]) == 2  # 20% bad: above the limit, stop before training
    err = capsys.readouterr().err
    assert f"{total - usable} of {total} samples (20%)" in err and "max_bad_fraction=0.1" in err
    assert all(f"{reason}: {n}" in err for reason, n in bad.items()), err
    assert not (home / "checkpoints").exists()

    assert cli.main(argv) == 0  # the default limit (0.5): train on the usable ones
    out = capsys.readouterr().out
    assert all(f"{reason} {n}" in out for reason, n in bad.items()) and f"(of {total})" in out, out
    tracking.configure(home)
    run = mlflow.search_runs(experiment_names=["football_baseline"], output_format="list")[0]
    params, metrics = run.data.params, run.data.metrics
    assert sum(int(params[f"data_{s}_images"]) for s in ("train", "val", "test")) == usable
    assert metrics["data_total_samples"] == total
    assert {k[len("data_skipped_"):]: v for k, v in metrics.items() if k.startswith("data_skipped_")} == bad


# --- the dataset's own splits


def split_folders(root: Path, sizes: dict[str, int]) -> None:
    """train/ validation/ test/ sub-folders, each an imagefolder of its own."""
    for split, n in sizes.items():
        good_folder(root / split, n=n)


def test_own_split_folders_are_used_as_they_are(tmp_path: Path):
    split_folders(tmp_path, {"train": 8, "val": 3, "test": 2})
    data = load_caption_data(str(tmp_path))
    assert data.splits == "own"
    assert (len(data.train), len(data.validation), len(data.test)) == (8, 3, 2)
    assert all(e.key.startswith("val/") for e in data.validation) and all(e.key.startswith("test/") for e in data.test)
    shuffled = load_caption_data(str(tmp_path), splits="random")
    assert shuffled.splits == "random" and shuffled.fingerprint != data.fingerprint
    assert {e.key for e in shuffled.validation} != {e.key for e in data.validation}


def test_a_missing_held_out_split_is_carved_from_train_and_said(tmp_path: Path):
    split_folders(tmp_path, {"train": 20, "validation": 4})
    data = load_caption_data(str(tmp_path), test_fraction=0.1)
    assert data.splits == "own" and len(data.validation) == 4
    assert len(data.test) == 2 and all(e.key.startswith("train/") for e in data.test)
    assert any("no own test split" in w for w in data.warnings)


def test_splits_own_without_own_splits_names_the_fix(tmp_path: Path):
    good_folder(tmp_path)
    with pytest.raises(DataSourceError, match="splits=own.*--set splits=random"):
        load_caption_data(str(tmp_path), splits="own")
    assert load_caption_data(str(tmp_path), splits="auto").splits == "random"


def test_a_split_column_and_coco_files_give_own_splits(tmp_path: Path):
    column = tmp_path / "column"
    names = good_folder(column, n=10)
    write_jsonl(column, [{"file_name": n, "text": f"photo {i}", "split": "test" if i < 2 else "train"}
                         for i, n in enumerate(names)])
    data = load_caption_data(str(column), test_fraction=0.1)
    assert data.splits == "own" and sorted(e.key for e in data.test) == names[:2]

    coco = tmp_path / "coco"
    for split, n in (("train2017", 9), ("val2017", 3)):
        for i in range(n):
            save_image(coco / split / f"{i:03d}.jpg", i * 20, "JPEG")
        (coco / "annotations").mkdir(parents=True, exist_ok=True)
        (coco / "annotations" / f"captions_{split}.json").write_text(json.dumps({
            "images": [{"id": i, "file_name": f"{i:03d}.jpg"} for i in range(n)],
            "annotations": [{"image_id": i, "caption": f"{split} photo {i} view {k}"} for i in range(n) for k in range(2)],
        }))
    data = load_caption_data(str(coco), test_fraction=0.2)
    assert data.splits == "own" and len(data.validation) == 3 and all(len(e.captions) == 2 for e in data.validation)
    assert len(data.train) + len(data.test) == 9 and data.test


def test_a_hub_dataset_with_splits_stays_in_arrow_and_uses_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import datasets

    from blipexp.data import hub_dataset

    def part(n: int, offset: int) -> datasets.Dataset:
        images = []
        for i in range(n):
            buffer = io.BytesIO()
            Image.new("RGB", (8, 6), (offset + i, 0, 0)).save(buffer, "PNG")
            images.append({"bytes": buffer.getvalue(), "path": None})
        return datasets.Dataset.from_dict({"image": images, "text": [f"row {offset + i}" for i in range(n)]},
                                          features=datasets.Features({"image": datasets.Image(),
                                                                      "text": datasets.Value("string")}))

    asked = {}

    def fake_load(source, split, revision, warnings):
        asked.update(split=split, revision=revision)
        return datasets.DatasetDict({"train": part(6, 0), "validation": part(2, 100), "test": part(2, 200)})

    monkeypatch.setattr(hub_dataset, "_load_hub_dataset", fake_load)
    data = load_caption_data("someone/photos", revision="v1.0")
    assert asked == {"split": None, "revision": "v1.0"}, "every split is loaded, at the pinned revision"
    assert data.splits == "own" and (len(data.train), len(data.validation), len(data.test)) == (6, 2, 2)
    assert isinstance(data.images.table, datasets.Dataset)
    assert sorted(data.image(e).getpixel((0, 0))[0] for e in data.validation) == [100, 101]


def _rows_per_caption(n_images: int, captions_per_image: int, shade: int = 0):
    """An Arrow table with one row per caption, as many Hub captioning datasets store them (rows shuffled)."""
    import datasets

    rows = []
    for i in range(n_images):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 6), (shade + i, 0, 0)).save(buffer, "PNG")
        rows += [({"bytes": buffer.getvalue(), "path": None}, f"image {shade + i} caption {c}")
                 for c in range(captions_per_image)]
    rows = rows[::2] + rows[1::2]  # an image's rows are not next to each other
    return datasets.Dataset.from_dict({"image": [r[0] for r in rows], "text": [r[1] for r in rows]},
                                      features=datasets.Features({"image": datasets.Image(),
                                                                  "text": datasets.Value("string")}))


def test_a_hub_dataset_with_one_row_per_caption_is_split_by_image_not_by_row(monkeypatch: pytest.MonkeyPatch):
    """Split row by row, an image's five rows land in train and in validation/test: its test captions would be
    scored on a model trained on its picture. Rows of one image become one example with all five references."""
    from blipexp.data import hub_dataset

    monkeypatch.setattr(hub_dataset, "_load_hub_dataset", lambda *args: _rows_per_caption(20, 5))
    data = load_caption_data("someone/captions", splits="random", val_fraction=0.2, test_fraction=0.2)
    splits = {"train": data.train, "validation": data.validation, "test": data.test}
    pictures = {name: {data.image(e).getpixel((0, 0))[0] for e in examples} for name, examples in splits.items()}
    assert sum(len(examples) for examples in splits.values()) == 20, "one example per image"
    assert all(len(e.captions) == 5 for examples in splits.values() for e in examples)
    assert not pictures["train"] & pictures["validation"] and not pictures["train"] & pictures["test"]
    assert not pictures["validation"] & pictures["test"] and data.validation and data.test
    for examples in splits.values():
        for e in examples:
            shade = data.image(e).getpixel((0, 0))[0]
            assert set(e.captions) == {f"image {shade} caption {c}" for c in range(5)}, "its own captions only"
    assert any("80 row(s) hold an image another row holds: grouped into 20 images" in w for w in data.warnings)


def test_an_image_in_two_of_a_datasets_own_splits_is_kept_in_one_and_reported(monkeypatch: pytest.MonkeyPatch):
    import datasets

    from blipexp.data import hub_dataset

    both = datasets.DatasetDict({"train": _rows_per_caption(6, 2), "test": _rows_per_caption(3, 1, shade=4)})
    monkeypatch.setattr(hub_dataset, "_load_hub_dataset", lambda *args: both)  # shades 4, 5 and 6: 4 and 5 in both
    data = load_caption_data("someone/leaky", splits="own")
    test_shades = {data.image(e).getpixel((0, 0))[0] for e in data.test}
    trained = {data.image(e).getpixel((0, 0))[0] for e in data.train + data.validation}  # validation: from train
    assert test_shades == {6} and trained == {0, 1, 2, 3, 4, 5}
    assert any(w.startswith("2 row(s) repeat an image of another of the dataset's own splits") for w in data.warnings)
