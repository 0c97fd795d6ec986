"""The data manifest: what a run's data were, per image, and what changed since."""
from __future__ import annotations

import json
from pathlib import Path

from test_sources import good_folder, save_image, write_jsonl

from blipexp.data import manifest
from blipexp.data.sources import load_caption_data


def load(folder: Path, **settings):
    return load_caption_data(str(folder), progress=False, **settings)


def test_the_manifest_holds_every_image_with_its_split_and_the_split_settings(tmp_path):
    names = good_folder(tmp_path)
    data = load(tmp_path)
    built = manifest.build(data)
    assert sorted(built["images"]) == sorted(names)
    splits = {key: entry[2] for key, entry in built["images"].items()}
    assert {k for k, s in splits.items() if s == "test"} == {e.key for e in data.test}
    assert built["settings"] == {"splits": "random", "val_fraction": 0.2, "test_fraction": 0.1, "split_seed": 42}
    assert built["fingerprint"] == data.fingerprint
    assert json.loads(manifest.as_text(built)) == built
    assert manifest.changes(built, manifest.build(load(tmp_path))) == [], "the same data: no change"


def test_changes_name_images_added_removed_edited_captions_and_split_settings(tmp_path):
    names = good_folder(tmp_path)
    before = manifest.build(load(tmp_path))
    (tmp_path / names[0]).unlink()  # removed
    save_image(tmp_path / names[1], shade=250)  # other pixels
    save_image(tmp_path / "new.png", shade=3)  # added
    rows = [{"file_name": name, "text": f"picture number {i}"} for i, name in enumerate(names)]
    rows[2]["text"] = "a caption edited since"
    write_jsonl(tmp_path, rows + [{"file_name": "new.png", "text": "a new picture"}])
    after = manifest.build(load(tmp_path, val_fraction=0.3))
    lines = manifest.changes(before, after)
    assert "1 image(s) added: new.png" in lines
    assert f"1 image(s) removed (deleted, or now unreadable): {names[0]}" in lines
    assert f"1 image(s) edited (other image content): {names[1]}" in lines
    assert f"1 image(s) with edited captions: {names[2]}" in lines
    assert "split setting val_fraction: 0.2 then, 0.3 now" in lines
