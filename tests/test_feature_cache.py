"""The frozen-encoder feature cache: same training as without it, computed once, invalidated by what matters."""
import mlflow
import pytest
import torch

from blipexp import tracking
from blipexp.data import load_data
from blipexp.experiment.spec import ExperimentSpec
from blipexp.model.feature_cache import PassThroughVision, cache_key, encode_vision, vision_digest
from blipexp.model.tiny import build_tiny_model, build_tiny_processor
from blipexp.training.train import train_trial

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop

SMALL = dict(pitch_scenes=60, epochs=2, train_batch_size=16, sample_captions=2, freeze_vision_encoder=True)


def tiny_spec(**changes) -> ExperimentSpec:
    spec = ExperimentSpec().tiny().replace(**{**SMALL, **changes})
    type(spec).name = "test_experiment"
    return spec


def run_trial(spec, home):
    tracking.configure(home)
    tracking.use_experiment("test_experiment", home)
    return train_trial(spec, load_data(spec, home), home, echo=False)


@pytest.fixture(scope="module")
def trials(new_home):
    """A frozen-encoder trial uncached, then cached (computes), then cached again with a 5-image epoch subset."""
    home = new_home()
    uncached = run_trial(tiny_spec(cache_vision_features=False), home)
    first = run_trial(tiny_spec(), home)
    second = run_trial(tiny_spec(val_subset=5), home)
    return home, uncached, first, second


def test_cached_features_train_the_same_model_as_the_encoder(trials):
    _, uncached, first, _ = trials
    assert [h["epoch"] for h in first.history] == [h["epoch"] for h in uncached.history]
    for cached, plain in zip(first.history, uncached.history):
        assert cached["loss"] == pytest.approx(plain["loss"], rel=1e-3)
    assert first.objective == pytest.approx(uncached.objective, rel=0.05, abs=0.05)


def test_features_are_computed_once_and_reused_by_the_next_trial(trials):
    home, uncached, first, second = trials
    params = {r.run_id: mlflow.get_run(r.run_id).data.params for r in (uncached, first, second)}
    assert "vision_cache_train" not in params[uncached.run_id]
    assert params[first.run_id]["vision_cache_train"] == "computed"
    assert params[second.run_id]["vision_cache_train"] == "hit"
    assert params[first.run_id]["vision_cache_validation"] == "computed"
    assert params[second.run_id]["vision_cache_validation_subset"] == "computed", "the 5-image subset is new data"
    # the final scores are the served model's, from pixels: no split is read from the cache for them
    assert not {"vision_cache_test", "vision_cache_validation"} & set(params[second.run_id])
    files = sorted(p.name for p in (home / "cache" / "vision").iterdir())
    # train, validation and the subset, each with its list of unusable images; nothing half-written left
    assert len(files) == 6 and all(f.endswith((".npy", ".bad.json")) for f in files), files
    assert sum(f.endswith(".npy") for f in files) == 3
    assert mlflow.get_run(second.run_id).data.metrics["vision_cache_mb"] > 0


def test_the_saved_model_keeps_its_vision_encoder(trials):
    from transformers import BlipForConditionalGeneration

    _, _, first, _ = trials
    model = BlipForConditionalGeneration.from_pretrained(first.model_dir)
    assert not isinstance(model.vision_model, PassThroughVision)
    assert sum(p.numel() for p in model.vision_model.parameters()) > 0


@pytest.fixture(scope="module")
def tiny():
    processor = build_tiny_processor(["a red player", "two blue players"])
    return processor, build_tiny_model(processor, seed=0)


def key_for(processor, model, **changes):
    parts = dict(fingerprint="abc", keys=["a.png", "b.png"], image_processor=processor.image_processor,
                 model_name="tiny", revision="main", weights=vision_digest(model.vision_model))
    return cache_key(**{**parts, **changes})


def test_the_key_changes_with_data_images_processor_model_and_weights(tiny):
    processor, model = tiny
    base = key_for(processor, model)
    assert key_for(processor, model) == base, "the same inputs give the same key"
    other_processor = build_tiny_processor(["a red player"])
    other_processor.image_processor.image_mean = [0.0, 0.0, 0.0]
    other_weights = build_tiny_model(processor, seed=1)
    changed = [
        key_for(processor, model, fingerprint="abd"),
        key_for(processor, model, keys=["a.png"]),
        key_for(other_processor, model),
        key_for(processor, model, model_name="other"),
        key_for(processor, model, revision="v2"),
        key_for(processor, other_weights),
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_pass_through_vision_lets_generate_use_cached_features(tiny):
    processor, model = tiny
    from PIL import Image

    pixels = processor.image_processor(images=[Image.new("RGB", (64, 64), "green")] * 2, return_tensors="pt")["pixel_values"]
    features = encode_vision(model.vision_model, pixels)
    model.eval()
    expected = model.generate(pixel_values=pixels, max_new_tokens=5)
    vision, model.vision_model = model.vision_model, PassThroughVision()
    try:
        assert torch.equal(model.generate(pixel_values=features, max_new_tokens=5), expected)
    finally:
        model.vision_model = vision


def test_epochs_score_the_subset_and_the_best_model_is_scored_on_all(trials, tmp_path):
    data = load_data(tiny_spec(val_subset=5), tmp_path)
    assert len(data.validation) > 5
    *_, second = trials
    run = mlflow.get_run(second.run_id)
    assert run.data.params["data_val_images_per_epoch"] == "5"
    assert run.data.params["data_val_images"] == str(len(data.validation))
    assert run.data.metrics["best_val_subset_cider"] == second.history[second.best_epoch]["cider"]
    assert second.objective == run.data.metrics["best_val_cider"] == second.val_metrics["cider"]


def test_the_cache_is_half_precision_and_read_memory_mapped_row_by_row(trials):
    import numpy as np

    from blipexp.data.images import BadImage
    from blipexp.model.feature_cache import FeatureRows

    home, *_ = trials
    path = max((home / "cache" / "vision").glob("*.npy"), key=lambda p: p.stat().st_size)
    rows = FeatureRows(path, {1: "truncated"})
    mapped = rows._rows()
    assert isinstance(mapped, np.memmap) and mapped.dtype == np.float16, "never loaded whole, stored as fp16"
    assert path.stat().st_size == mapped.size * 2 + mapped.offset
    assert rows[0].dtype == torch.float32 and tuple(rows[0].shape) == mapped.shape[1:]
    assert torch.equal(rows[0], torch.from_numpy(np.array(mapped[0], dtype=np.float32)))
    with pytest.raises(BadImage, match="truncated"):
        rows[1]
    import pickle
    assert pickle.loads(pickle.dumps(rows))._array is None, "workers map the file themselves"
