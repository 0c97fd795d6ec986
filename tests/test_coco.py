"""COCO caption files and Karpathy split files, read through read_folder (the JSON layouts live in data/coco.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_folder import coco, karpathy, problems, read, save_image, write_json

from blipexp.data.sample import DataSourceError

# --- COCO captions: one captions.json, or the COCO release layout


def test_coco_captions_json(tmp_path: Path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        save_image(tmp_path / name, fmt="JPEG")
    data = coco([(1, "a.jpg"), (2, "b.jpg"), (3, "c.jpg")],
                [(2, "b first"), (1, "a only"), (2, "b second"), (99, "nobody's"), (2, "b third")])
    data["annotations"].append("not an annotation")
    write_json(tmp_path / "captions.json", data)

    samples = read(tmp_path)

    assert samples["a.jpg"].captions == ["a only"] and samples["a.jpg"].image == tmp_path / "a.jpg"
    assert samples["b.jpg"].captions == ["b first", "b second", "b third"]  # all of them, in order
    assert problems(samples) == {"c.jpg": "missing_caption", "annotation-3": "unknown_image_id",
                                 "annotation-5": "bad_metadata_row"}
    assert all(s.split is None for s in samples.values())


def test_coco_release_layout_with_two_split_files(tmp_path: Path):
    save_image(tmp_path / "train2017" / "000000000009.jpg", fmt="JPEG")
    save_image(tmp_path / "train2017" / "000000000025.jpg", fmt="JPEG")
    save_image(tmp_path / "val2017" / "000000000009.jpg", fmt="JPEG")  # same name as a training image
    annotations = tmp_path / "annotations"
    write_json(annotations / "captions_train2017.json",
               coco([(9, "000000000009.jpg"), (25, "000000000025.jpg")], [(9, "t9 a"), (25, "t25"), (9, "t9 b")]))
    write_json(annotations / "captions_val2017.json", coco([(9, "000000000009.jpg")], [(9, "v9")]))
    write_json(annotations / "instances_val2017.json", {"images": [], "annotations": [], "categories": []})
    warnings: list[str] = []

    samples = read(tmp_path, warnings)

    assert {key: (s.split, s.captions) for key, s in samples.items()} == {
        "train2017/000000000009.jpg": ("train", ["t9 a", "t9 b"]),
        "train2017/000000000025.jpg": ("train", ["t25"]),
        "val2017/000000000009.jpg": ("validation", ["v9"]),
    }
    assert samples["val2017/000000000009.jpg"].image == tmp_path / "val2017" / "000000000009.jpg"
    assert not problems(samples) and not warnings


def test_coco_release_warns_about_a_missing_image_folder_and_refuses_an_unknown_split(tmp_path: Path):
    write_json(tmp_path / "annotations" / "captions_val2014.json", coco([(1, "x.jpg")], [(1, "x")]))
    warnings: list[str] = []
    assert read(tmp_path, warnings)["val2014/x.jpg"].split == "validation"
    assert any(str(tmp_path / "val2014") in warning for warning in warnings)

    write_json(tmp_path / "annotations" / "captions_extra2014.json", coco([(1, "x.jpg")], [(1, "x")]))
    with pytest.raises(DataSourceError, match=r"captions_extra2014\.json: its name gives no split\. Fix: .*captions_"):
        read(tmp_path)


# --- Karpathy split files


def test_karpathy_flickr_file_without_filepath_and_restval(tmp_path: Path):
    for name in ("1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg"):
        save_image(tmp_path / name, fmt="JPEG")
    write_json(tmp_path / "dataset_flickr30k.json", karpathy([
        {"filename": "1.jpg", "split": "train", "raws": ["one a", "one b", "one c"]},
        {"filename": "2.jpg", "split": "val", "raws": ["two"]},
        {"filename": "3.jpg", "split": "test", "raws": ["three"]},
        {"filename": "4.jpg", "split": "restval", "raws": ["four"]},
        {"filename": "5.jpg", "split": "holdout", "raws": ["five"]},
        {"filename": "6.jpg", "split": "train", "raws": []},
    ]))
    write_json(tmp_path / "dataset_info.json", {"description": "datasets' own file, not a Karpathy file"})

    samples = read(tmp_path)

    assert {key: s.split for key, s in samples.items() if not s.problem} == {
        "1.jpg": "train", "2.jpg": "validation", "3.jpg": "test", "4.jpg": "train"}
    assert samples["1.jpg"].captions == ["one a", "one b", "one c"] and samples["1.jpg"].image == tmp_path / "1.jpg"
    assert problems(samples) == {"5.jpg": "unknown_split", "6.jpg": "missing_caption"}


def test_karpathy_coco_file_with_filepath(tmp_path: Path):
    save_image(tmp_path / "val2014" / "COCO_val2014_1.jpg", fmt="JPEG")
    save_image(tmp_path / "train2014" / "COCO_train2014_2.jpg", fmt="JPEG")
    write_json(tmp_path / "dataset_coco.json", karpathy([
        {"filepath": "val2014", "filename": "COCO_val2014_1.jpg", "split": "test", "raws": ["a", "b"]},
        {"filepath": "train2014", "filename": "COCO_train2014_2.jpg", "split": "restval", "raws": ["c"]},
    ]))
    samples = read(tmp_path)
    assert {key: (s.split, s.captions) for key, s in samples.items()} == {
        "val2014/COCO_val2014_1.jpg": ("test", ["a", "b"]),
        "train2014/COCO_train2014_2.jpg": ("train", ["c"]),
    }


def test_karpathy_shaped_file_without_splits_gives_none(tmp_path: Path):
    write_json(tmp_path / "dataset_mine.json", karpathy([{"filename": "1.jpg", "raws": ["one"]}]))
    assert {key: (s.split, s.problem) for key, s in read(tmp_path).items()} == {"1.jpg": (None, None)}


def test_several_karpathy_files_are_refused(tmp_path: Path):
    write_json(tmp_path / "dataset_flickr8k.json", karpathy([{"filename": "1.jpg", "split": "train", "raws": ["x"]}]))
    write_json(tmp_path / "dataset_flickr30k.json", karpathy([{"filename": "1.jpg", "split": "train", "raws": ["x"]}]))
    with pytest.raises(DataSourceError, match=r"dataset_flickr30k\.json, dataset_flickr8k\.json.*Fix: keep the one"):
        read(tmp_path)


# --- broken JSON files: an error naming the file and the format


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("captions.json", '{"images": [', r"captions\.json is not valid JSON .*Fix: write it in the COCO caption format"),
    ("captions.json", '{"images": []}', r"captions\.json has no 'annotations' list.*Fix: .*COCO caption format"),
    ("captions.json", json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}],
                                  "annotations": [{"id": 5, "image_id": 1, "bbox": [0, 0, 1, 1]}]}),
     (r"captions\.json: no entry of 'annotations' has the key 'caption' "
      r"\(the first one has: 'id', 'image_id', 'bbox'\)")),
    ("dataset_coco.json", '[{"filename": "a.jpg"}]', r"dataset_coco\.json has no 'images' list.*Karpathy split format"),
    ("dataset_coco.json", json.dumps({"images": [{"filename": "a.jpg", "split": "train"}]}),
     r"dataset_coco\.json: no entry of 'images' has the key 'sentences'.*Fix: .*Karpathy"),
    ("annotations/captions_val2017.json", b'{"images": "caf\xe9"}', r"captions_val2017\.json is not valid JSON"),
])
def test_unusable_json_file_names_the_file_and_the_format(
    tmp_path: Path, name: str, content: str | bytes, expected: str
):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(DataSourceError, match=expected):
        read(tmp_path)
