"""The real path on the tiny model: Trainer, collator, generation-based evaluation, MLflow store in a temp dir."""
import json

import mlflow
import pytest
from transformers import BlipForConditionalGeneration, BlipProcessor

from blipexp import tracking
from blipexp.data import load_data
from blipexp.evaluation import cider_document_frequency
from blipexp.metrics import caption_scores
from blipexp.spec import ExperimentSpec
from blipexp.train import train_trial

SMALL = dict(pitch_scenes=60, epochs=2, train_batch_size=16, sample_captions=3)


def tiny_spec(**changes) -> ExperimentSpec:
    spec = ExperimentSpec().tiny().replace(**{**SMALL, **changes})
    type(spec).name = "test_experiment"
    return spec


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short training run, with every generate() call recorded."""
    home = tmp_path_factory.mktemp("home")
    spec = tiny_spec()
    tracking.configure(home)
    tracking.use_experiment("test_experiment", home)
    calls = []
    original = BlipForConditionalGeneration.generate

    def recording_generate(self, *args, **kwargs):
        calls.append((args, kwargs))
        return original(self, *args, **kwargs)

    BlipForConditionalGeneration.generate = recording_generate
    try:
        data = load_data(spec, home)
        result = train_trial(spec, data, home, echo=False)
    finally:
        BlipForConditionalGeneration.generate = original
    return spec, data, result, calls, home


def test_generate_gets_the_pixels_and_nothing_of_the_caption(trained):
    _, _, _, calls, _ = trained
    assert calls, "evaluation must generate captions"
    for args, kwargs in calls:
        assert not args
        assert set(kwargs) == {"pixel_values", "max_new_tokens", "num_beams"}


def test_run_holds_spec_tags_and_per_epoch_metrics(trained):
    spec, data, result, _, _ = trained
    run = mlflow.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["profile"] == "tiny"
    assert run.data.tags["data_fingerprint"] == data.fingerprint
    assert run.data.params["learning_rate"] == str(spec.learning_rate)
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "val_cider")
    assert sorted(m.step for m in history) == [0, 1, 2]  # before training, then every epoch
    assert {"objective", "best_val_cider", "untrained_val_cider", "train_loss"} <= set(run.data.metrics)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id)}
    assert {"spec.json", "val_samples.json"} <= artifacts


def test_best_epoch_is_reported_and_its_model_is_saved(trained):
    spec, data, result, _, _ = trained
    best = max((h for h in result.history if h["epoch"] >= 1), key=lambda h: h["cider"])
    assert result.objective == best["cider"] and result.best_epoch == best["epoch"]
    model = BlipForConditionalGeneration.from_pretrained(result.model_dir)
    processor = BlipProcessor.from_pretrained(result.model_dir)
    pixels = processor(images=[data.image(e) for e in data.validation], return_tensors="pt")["pixel_values"]
    captions = processor.batch_decode(model.generate(pixel_values=pixels, max_new_tokens=spec.max_new_tokens),
                                      skip_special_tokens=True)
    idf = cider_document_frequency(spec, data, len(data.validation), echo=False)  # a few images: the corpus's
    reloaded = caption_scores(captions, [list(e.captions) for e in data.validation], idf)["cider"]
    assert reloaded == pytest.approx(result.objective, abs=1e-6), "the saved model is the best epoch's"
    assert not list(result.model_dir.parent.glob("checkpoint-*")), "intermediate checkpoints are removed"


def test_training_improves_on_the_untrained_model(trained):
    _, _, result, _, _ = trained
    assert result.objective > result.untrained["cider"]
    assert result.val_metrics["loss"] < result.untrained["loss"]


def test_a_failing_trial_ends_its_run_failed(home):
    spec = tiny_spec(epochs=1)
    tracking.configure(home)
    tracking.use_experiment("test_experiment", home)
    data = load_data(spec, home)

    def explode(epoch, metrics):
        if epoch == 1:
            raise RuntimeError("injected")

    with pytest.raises(RuntimeError, match="injected"):
        train_trial(spec, data, home, listeners=[explode], echo=False)
    runs = mlflow.search_runs(experiment_names=["test_experiment"], output_format="list")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_a_loss_objective_selects_the_lowest_loss_epoch(home):
    spec = tiny_spec(objective_metric="loss", sample_captions=0)
    tracking.configure(home)
    tracking.use_experiment("test_experiment", home)
    result = train_trial(spec, load_data(spec, home), home, echo=False)
    losses = {int(h["epoch"]): h["loss"] for h in result.history if h["epoch"] >= 1}
    assert len(set(losses.values())) == len(losses) > 1, "the epochs' losses must differ for the choice to matter"
    lowest = min(losses, key=losses.get)
    assert (result.best_epoch, result.objective) == (lowest, losses[lowest])


FLUENT_WRITES = ("log_param", "log_params", "log_metric", "log_metrics", "set_tag", "set_tags", "log_dict",
                 "log_table", "log_figure")


def test_a_trial_writes_to_mlflow_through_tracking_only(home, monkeypatch):
    """Every write goes through tracking.Run (one home for MLflow writes, timed for the benchmark)."""
    spec = tiny_spec(epochs=1, sample_captions=1)
    tracking.configure(home)
    tracking.use_experiment("test_experiment", home)
    data = load_data(spec, home)

    def refuse(*args, **kwargs):
        raise AssertionError("an MLflow write bypassing blipexp.tracking")

    for name in FLUENT_WRITES:
        monkeypatch.setattr(mlflow, name, refuse)
    writes = tracking.WRITES.calls
    result = train_trial(spec, data, home, echo=False)
    assert tracking.WRITES.calls > writes
    run = mlflow.get_run(result.run_id)
    assert {"data_train_images", "world_size", "cider_df_used"} <= set(run.data.params)
    assert {"val_cider", "train_loss", "objective", "data_total_samples"} <= set(run.data.metrics)


def test_known_untrained_scores_replace_the_epoch_0_evaluation(trained):
    spec, data, result, _, home = trained
    known = {**result.untrained, "cider": 123.0}  # a value no evaluation would produce
    seen = []
    again = train_trial(spec.replace(epochs=1), data, home, echo=False, untrained=known,
                        listeners=[lambda epoch, metrics: seen.append(epoch)])
    assert [h["epoch"] for h in again.history] == [0, 1] and again.history[0]["cider"] == 123.0
    assert seen == [0, 1], "listeners still hear of epoch 0 (a sweep learns its trial's run id there)"
    history = mlflow.MlflowClient().get_metric_history(again.run_id, "val_cider")
    assert {m.step: m.value for m in history}[0] == 123.0
    table = mlflow.load_table("val_samples_by_epoch.json", run_ids=[again.run_id])
    assert sorted(set(table["epoch"])) == [0, 1], "epoch 0's sample captions are there though its scores were reused"


def test_every_epochs_sample_captions_come_from_its_own_evaluation(trained):
    spec, data, result, calls, home = trained
    tracking.configure(home)  # earlier tests point MLflow at their own stores
    table = mlflow.load_table("val_samples_by_epoch.json", run_ids=[result.run_id])
    assert sorted(set(table["epoch"])) == [0, 1, 2], "before training, then every epoch"
    keys = [list(table[table["epoch"] == epoch]["key"]) for epoch in (0, 1, 2)]
    assert keys[0] == keys[1] == keys[2] and len(keys[0]) == spec.sample_captions, "the same images every epoch"
    assert all(image["type"] == "image" for image in table["image"]), "the UI shows the pictures"
    references = dict(zip(table["key"], table["references"]))
    assert references[data.validation[0].key] == " | ".join(data.validation[0].captions)
    assert set(table[table["epoch"] == 0]["prediction"]) != set(table[table["epoch"] == 2]["prediction"])
    sized_like_the_samples = [c for c in calls if len(c[1]["pixel_values"]) == spec.sample_captions]
    assert len(sized_like_the_samples) == 1, "no generation for the table but the final model's val_samples.json"


def test_the_run_lists_its_dataset_with_fingerprint_sizes_and_skips(trained):
    spec, data, result, _, home = trained
    tracking.configure(home)
    [entry] = mlflow.get_run(result.run_id).inputs.dataset_inputs
    assert (entry.dataset.name, entry.dataset.digest, entry.dataset.source_type) == ("pitch", data.fingerprint,
                                                                                     "generated")
    profile = json.loads(entry.dataset.profile)
    assert (profile["train_images"], profile["validation_images"], profile["test_images"]) == (
        len(data.train), len(data.validation), len(data.test))
    assert profile["total_samples"] == data.total and profile["skipped"] == dict(data.skipped)
    assert json.loads(entry.dataset.source)["scenes"] == spec.pitch_scenes


def test_untrained_key_ignores_training_knobs_only():
    from blipexp.train import untrained_key

    spec = tiny_spec()
    key = untrained_key(spec, "data")
    assert untrained_key(spec.replace(learning_rate=1e-4, epochs=9, freeze_vision_encoder=True), "data") == key
    for changed in (spec.replace(seed=1), spec.replace(max_new_tokens=5), spec.replace(val_subset=3)):
        assert untrained_key(changed, "data") != key
    assert untrained_key(spec, "other data") != key
