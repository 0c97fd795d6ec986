"""read_folder: every local layout, read into Samples (keys, captions, own splits, problems) without opening images."""
from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from blipexp.data.folder import read_folder
from blipexp.data.sample import DataSourceError, Sample


def save_image(path: Path, shade: int = 40, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (shade, 255 - shade, 40)).save(path, fmt)


def write_jsonl(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def write_csv(folder: Path, header: list[str], rows: list[list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "captions.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def read(folder: Path, warnings: list[str] | None = None) -> dict[str, Sample]:
    samples = read_folder(folder, "image", "text", [] if warnings is None else warnings)
    by_key = {sample.key: sample for sample in samples}
    assert len(by_key) == len(samples), "keys must be unique"
    return by_key


def problems(samples: dict[str, Sample]) -> dict[str, str]:
    return {key: sample.problem for key, sample in samples.items() if sample.problem}


# --- metadata.jsonl and captions.csv, with and without a split column


def test_metadata_jsonl_keys_captions_and_no_split(tmp_path: Path):
    save_image(tmp_path / "a.png")
    save_image(tmp_path / "sub" / "b.jpg", fmt="JPEG")
    write_jsonl(tmp_path, [
        {"file_name": "a.png", "text": ["one", "two"]},
        {"file_name": "./sub/b.jpg", "text": "three"},
        {"file_name": "sub\\b.jpg", "text": "four"},  # a Windows-style path names the same file
    ])
    samples = read(tmp_path)
    captions = {key: s.captions for key, s in samples.items()}
    assert captions == {"a.png": [["one", "two"]], "sub/b.jpg": ["three", "four"]}
    assert samples["sub/b.jpg"].image == tmp_path / "sub" / "b.jpg" and samples["sub/b.jpg"].image.is_absolute()
    assert all(s.split is None and s.problem is None for s in samples.values())


SPLIT_ROWS = [  # (file, caption, split as written)
    ("a.png", "a one", "train"),
    ("a.png", "a two", "Train"),
    ("b.png", "b", "val"),
    ("c.png", "c", " TEST "),
    ("d.png", "d", "restval"),  # Karpathy's name for extra training images
    ("e.png", "e", "dev"),
    ("f.png", "f", "trian"),  # a typo
    ("g.png", "g", ""),  # no split on a row of a file that has the column
    ("h.png", "h one", "train"),
    ("h.png", "h two", "test"),  # one image in two splits
]
EXPECTED_SPLITS = {"a.png": "train", "b.png": "validation", "c.png": "test", "d.png": "train", "e.png": "validation"}


def test_split_column_in_metadata_jsonl(tmp_path: Path):
    for name in {row[0] for row in SPLIT_ROWS}:
        save_image(tmp_path / name)
    rows = [{"file_name": file, "text": text, "split": split} for file, text, split in SPLIT_ROWS]
    del rows[7]["split"]  # g.png: the key is absent on its row
    write_jsonl(tmp_path, rows + [{"file_name": "i.png", "text": "i", "split": None}])
    samples = read(tmp_path)
    assert {key: s.split for key, s in samples.items() if not s.problem} == EXPECTED_SPLITS
    assert problems(samples) == {"f.png": "unknown_split", "g.png": "unknown_split", "h.png": "conflicting_split",
                                 "i.png": "unknown_split"}
    assert samples["a.png"].captions == ["a one", "a two"]


def test_split_column_in_captions_csv(tmp_path: Path):
    for name in {row[0] for row in SPLIT_ROWS}:
        save_image(tmp_path / name, fmt="JPEG")
    write_csv(tmp_path, ["split", "image", "text"], [[split, file, text] for file, text, split in SPLIT_ROWS])
    with open(tmp_path / "captions.csv", "a", encoding="utf-8") as handle:
        handle.write("train,j.png\n")  # a short row: no caption, so the image gets a None caption
    samples = read(tmp_path)
    assert {key: s.split for key, s in samples.items() if not s.problem} == {**EXPECTED_SPLITS, "j.png": "train"}
    assert problems(samples) == {"f.png": "unknown_split", "g.png": "unknown_split", "h.png": "conflicting_split"}
    assert samples["j.png"].captions == [None]


# --- split sub-folders


def test_split_subfolders_each_with_their_own_caption_file(tmp_path: Path):
    save_image(tmp_path / "train" / "x.png")
    save_image(tmp_path / "train" / "y.png")
    save_image(tmp_path / "val" / "x.png")  # the same file name in another split: keys stay unique
    save_image(tmp_path / "test" / "img" / "z.jpg", fmt="JPEG")
    save_image(tmp_path / "dev" / "lost.png")  # a split folder without a caption file
    write_jsonl(tmp_path / "train", [{"file_name": "x.png", "text": "x1"}, {"file_name": "x.png", "text": "x2"},
                                     {"file_name": "y.png", "text": "y", "split": "test"}])
    write_csv(tmp_path / "val", ["image", "text"], [["x.png", "other x"], ["../train/y.png", "escapes val/"]])
    write_jsonl(tmp_path / "test", [{"file_name": "img/z.jpg", "text": "z"}])
    (tmp_path / "test" / "metadata.jsonl").open("a").write("not json\n")
    warnings: list[str] = []

    samples = read(tmp_path, warnings)

    assert {key: (s.split, s.captions, s.problem) for key, s in samples.items()} == {
        "train/x.png": ("train", ["x1", "x2"], None),
        "train/y.png": ("train", ["y"], "conflicting_split"),  # its row's split disagrees with its folder's
        "val/x.png": ("validation", ["other x"], None),
        "val/line-3": ("validation", [], "missing_file"),
        "test/img/z.jpg": ("test", ["z"], None),
        "test/line-2": ("test", [], "bad_metadata_row"),
    }
    assert samples["val/x.png"].image == tmp_path / "val" / "x.png"
    assert any(str(tmp_path / "dev") in warning and "not used" in warning for warning in warnings)


def test_caption_file_at_the_root_makes_split_named_folders_plain_folders(tmp_path: Path):
    save_image(tmp_path / "test" / "x.png")
    write_jsonl(tmp_path / "test", [{"file_name": "x.png", "text": "ignored"}])
    write_jsonl(tmp_path, [{"file_name": "test/x.png", "text": "x"}])
    samples = read(tmp_path)
    assert {key: (s.split, s.captions) for key, s in samples.items()} == {"test/x.png": (None, ["x"])}



# --- builders of the JSON layouts (their own tests: tests/test_coco.py)


def coco(images: list[tuple[int, str]], annotations: list[tuple[int, str]]) -> dict:
    return {
        "info": {"description": "test"},
        "images": [{"id": image_id, "file_name": name, "width": 8, "height": 6} for image_id, name in images],
        "annotations": [{"id": 100 + i, "image_id": image_id, "caption": caption}
                        for i, (image_id, caption) in enumerate(annotations)],
    }


def karpathy(entries: list[dict]) -> dict:
    images = []
    for i, entry in enumerate(entries):
        sentences = [{"tokens": raw.split(), "raw": raw, "imgid": i} for raw in entry.pop("raws")]
        images.append({"sentids": list(range(len(sentences))), "imgid": i, "sentences": sentences, **entry})
    return {"images": images, "dataset": "test"}


# --- rules every layout keeps


def jsonl_layout(root: Path, files: list[str]) -> None:
    write_jsonl(root, [{"file_name": file, "text": "c"} for file in files])


def csv_layout(root: Path, files: list[str]) -> None:
    write_csv(root, ["image", "text"], [[file, "c"] for file in files])


def coco_layout(root: Path, files: list[str]) -> None:
    write_json(root / "captions.json", coco(list(enumerate(files)), [(i, "c") for i in range(len(files))]))


def release_layout(root: Path, files: list[str]) -> None:
    write_json(root / "annotations" / "captions_train2017.json",
               coco(list(enumerate(files)), [(i, "c") for i in range(len(files))]))


def karpathy_layout(root: Path, files: list[str]) -> None:
    entries = [{"filename": file, "split": "train", "raws": ["c"]} for file in files]
    write_json(root / "dataset_flickr8k.json", karpathy(entries))


def subfolder_layout(root: Path, files: list[str]) -> None:
    write_jsonl(root / "train", [{"file_name": file, "text": "c"} for file in files])


LAYOUTS: dict[str, tuple[Callable[[Path, list[str]], None], str]] = {  # writer, the folder its paths are relative to
    "metadata.jsonl": (jsonl_layout, ""), "captions.csv": (csv_layout, ""), "captions.json": (coco_layout, ""),
    "coco release": (release_layout, "train2017/"), "karpathy": (karpathy_layout, ""),
    "split folders": (subfolder_layout, "train/"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_paths_escaping_the_folder_are_refused_in_every_layout(tmp_path: Path, layout: str):
    write, prefix = LAYOUTS[layout]
    root = tmp_path / "root"
    save_image(root / prefix / "in.png")
    save_image(tmp_path / "out.png")  # exists, but outside the dataset folder
    write(root, ["in.png", "../out.png", "../../out.png", str(tmp_path / "out.png"), "http://host/x.png", ""])
    samples = read(root)
    usable = {key: s for key, s in samples.items() if not s.problem}
    assert list(usable) == [f"{prefix}in.png"] and usable[f"{prefix}in.png"].image == root / prefix / "in.png"
    assert sorted(s.problem for s in samples.values() if s.problem) == ["missing_file"] * 5
    assert all(s.image is None for s in samples.values() if s.problem)


def test_karpathy_filepath_escaping_the_folder_is_refused(tmp_path: Path):
    write_json(tmp_path / "dataset_coco.json", karpathy([
        {"filepath": "..", "filename": "x.jpg", "split": "train", "raws": ["c"]},
        {"filepath": "val2014/../..", "filename": "y.jpg", "split": "train", "raws": ["c"]},
        {"filepath": "val2014/..", "filename": "z.jpg", "split": "train", "raws": ["c"]},  # stays inside
    ]))
    assert {key: s.problem for key, s in read(tmp_path).items()} == {
        "z.jpg": None, "image-0": "missing_file", "image-1": "missing_file"}


def test_folder_without_a_layout_lists_every_layout_with_an_example(tmp_path: Path):
    save_image(tmp_path / "a.png")
    save_image(tmp_path / "train" / "b.png")  # a split folder, but without a caption file
    with pytest.raises(DataSourceError) as caught:
        read(tmp_path)
    lines = str(caught.value).splitlines()
    assert str(tmp_path) in lines[0] and "Fix:" in lines[0]
    markers = ['metadata.jsonl (the `datasets` imagefolder layout), one JSON object per line: {"file_name": "0001.jpg"',
               "captions.csv: a header row `image,text`", 'captions.json in the COCO caption format: {"images"',
               "dataset_coco.json (a Karpathy split file; or dataset_flickr30k.json, ...) in the Karpathy split format",
               "the COCO release: annotations/captions_train2017.json", "split sub-folders: train/, validation/"]
    assert len(lines) == 1 + len(markers)
    assert all(line.startswith(f"  - {marker}") for line, marker in zip(lines[1:], markers)), lines


def test_several_layouts_read_the_first_and_warn(tmp_path: Path):
    write_jsonl(tmp_path, [{"file_name": "a.png", "text": "from jsonl"}])
    coco_layout(tmp_path, ["b.png"])
    karpathy_layout(tmp_path, ["c.png"])
    warnings: list[str] = []
    assert list(read(tmp_path, warnings)) == ["a.png"]
    assert warnings == [
        f"{tmp_path} holds several caption files: using metadata.jsonl, ignoring captions.json, dataset_flickr8k.json"
    ]


def test_many_rows_are_read_without_touching_the_images(tmp_path: Path):
    """20,000 rows whose images do not exist: reading never looks at them (the checks come later, in parallel)."""
    n = 20_000
    write_jsonl(tmp_path, [{"file_name": f"photos/{i:05d}.jpg", "text": f"caption {i}", "split": "train"}
                           for i in range(n)])
    samples = read_folder(tmp_path, "image", "text", [])
    assert len(samples) == n and len({s.key for s in samples}) == n
    assert all(s.problem is None and s.split == "train" for s in samples)
    assert samples[123].image == tmp_path / "photos" / "00123.jpg" and samples[123].captions == ["caption 123"]
