"""Datasets decoded on demand: a bad image met mid-epoch is skipped and counted, never a crash."""
from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
from test_survey import photo_folder

from blipexp import tracking
from blipexp.data import load_data
from blipexp.data.collator import IGNORE_INDEX, CaptionCollator
from blipexp.data.features import (
    CaptionDataset,
    PixelRows,
    SkipTally,
    dataloader_workers,
    evaluation_dataset,
    training_dataset,
)
from blipexp.data.images import REASONS, BadImage
from blipexp.data.sources import CaptionData, load_caption_data
from blipexp.experiment.spec import ExperimentSpec
from blipexp.model.tiny import build_tiny_processor
from blipexp.training.train import train_trial

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop


class FlakyRows:
    """Rows 2 and 3 fail as a truncated and a vanished file would."""

    bad = {2: "truncated", 3: "missing_file"}

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> torch.Tensor:
        if index in self.bad:
            raise BadImage(self.bad[index])
        return torch.full((3, 4, 4), float(index))

    def blank(self) -> torch.Tensor:
        return torch.zeros(3, 4, 4)


def test_training_replaces_a_failed_item_with_the_next_usable_one():
    dataset = CaptionDataset(FlakyRows(), [(i, f"caption {i}") for i in range(6)], training=True)
    item = dataset[2]
    assert item["pixel_values"][0, 0, 0] == 4.0 and item["caption"] == "caption 4", "2 and 3 fail: 4 stands in"
    assert item["bad_image"] == 2 and REASONS[item["bad_reason"]] == "truncated"
    assert dataset[1]["bad_image"] == -1


def test_evaluation_keeps_the_failed_image_in_place_with_its_labels_masked():
    processor = build_tiny_processor(["caption one", "caption two"])
    dataset = CaptionDataset(FlakyRows(), [(i, "caption one") for i in range(6)], training=False)
    collator = CaptionCollator(processor.tokenizer, processor.tokenizer.bos_token_id, 10)
    batch = collator([dataset[i] for i in range(6)])
    masked = (batch["labels"] == IGNORE_INDEX).all(dim=1)
    assert masked.tolist() == [False, False, True, True, False, False]
    tally = SkipTally()
    tally.add("validation", batch["bad_image"], batch["bad_reason"])
    tally.add("validation", batch["bad_image"], batch["bad_reason"])  # the next epoch meets them again
    assert tally.counts() == {"truncated": 1, "missing_file": 1}


def test_pixel_rows_decode_on_demand_and_keep_rows_only_with_memo(tmp_path: Path):
    photo_folder(tmp_path / "photos", 6)
    data = load_caption_data(str(tmp_path / "photos"), progress=False)
    processor = build_tiny_processor(["photo"])
    plain = PixelRows(data, data.train, processor.image_processor)
    kept = PixelRows(data, data.train, processor.image_processor, memo=True)
    assert torch.equal(plain[0], kept[0]) and plain[0].shape == (3, 64, 64)
    assert plain.memo is None and list(kept.memo) == [0]
    train = training_dataset(plain, data.train)
    val, refs = evaluation_dataset(PixelRows(data, data.validation, processor.image_processor), data.validation)
    assert len(train) == len(data.train) and len(val) == len(refs) == len(data.validation)


def test_a_file_broken_after_the_first_look_is_skipped_mid_epoch_and_counted(tmp_path: Path, home: Path):
    """A real tiny run on a folder whose photos break between the first look and training."""
    paths = photo_folder(tmp_path / "photos", 40)
    spec = ExperimentSpec().tiny().replace(dataset=str(tmp_path / "photos"), epochs=2, train_batch_size=8,
                                           sample_captions=2, dataloader_workers=1, val_fraction=0.25)
    type(spec).name = "test_experiment"
    tracking.configure(home)
    tracking.use_experiment("test_experiment", home)
    data = load_data(spec, home, progress=False)
    by_key = {p.name: p for p in paths}
    truncated = by_key[data.train[3].key]
    truncated.write_bytes(truncated.read_bytes()[:200])
    by_key[data.train[10].key].unlink()
    by_key[data.validation[1].key].write_text("no longer an image")

    result = train_trial(spec, data, home, echo=False)
    metrics = mlflow.get_run(result.run_id).data.metrics
    assert metrics["data_skipped_during_run_truncated"] == 1
    assert metrics["data_skipped_during_run_missing_file"] == 1
    assert metrics["data_skipped_during_run_not_an_image"] == 1
    assert result.objective == result.objective, "scored on the usable validation images (not NaN)"


def test_auto_workers_are_none_when_decoding_is_not_the_work():
    processor = build_tiny_processor(["a red player"])
    data = CaptionData(train=[], validation=[], test=[], skipped={}, total=0, fingerprint="f", source="s")
    auto = ExperimentSpec().tiny().replace(dataloader_workers=-1)
    assert dataloader_workers(auto.replace(dataloader_workers=3), data, processor, cached=True) == 3, "the spec's own"
    assert dataloader_workers(auto, data, processor, cached=True) == 0, "cached features are read, not decoded"
    assert dataloader_workers(auto, data, processor, cached=False) == 0, "tiny pixels are kept after one epoch"
