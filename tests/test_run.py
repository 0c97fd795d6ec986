"""runner.register_trial_model on a tiny trained model: what a registered version's tags say about how it was made."""
import mlflow
import pytest

from blipexp import registry, tracking
from blipexp.cli import run as runner
from blipexp.data import load_data
from blipexp.experiment.search_space import Choice, FloatRange
from blipexp.experiment.spec import ExperimentSpec
from blipexp.scoring import eval_cache
from blipexp.training.train import train_trial

pytestmark = pytest.mark.slow


class WarmupSweep(ExperimentSpec):
    """Hypothesis: warm-up and schedule matter more than the learning rate."""

    def search_space(self):
        return {"warmup_ratio": FloatRange(0.0, 0.2), "lr_scheduler": Choice(("linear", "cosine")),
                "freeze_vision_encoder": Choice((False, True))}


@pytest.fixture(scope="module")
def trained(new_home):
    """A tiny model trained with the values a sweep of WarmupSweep might have picked."""
    home = new_home()
    spec = WarmupSweep().tiny().replace(pitch_scenes=60, test_fraction=0.2,  # 12 test images: enough for an interval
                                        epochs=1, train_batch_size=16, sample_captions=0, warmup_ratio=0.125,
                                        lr_scheduler="cosine", freeze_vision_encoder=True, cache_vision_features=False)
    WarmupSweep.name = "warmup_sweep"
    tracking.configure(home)
    tracking.use_experiment("warmup_sweep", home)
    data = load_data(spec, home)
    return spec, data, train_trial(spec, data, home, echo=False)


def register(trained, spec: ExperimentSpec):
    _, data, result = trained
    return runner.register_trial_model(spec, data, result.model_dir, result.run_id, {})


def test_a_version_is_tagged_with_every_searched_field_and_the_model_defining_ones(trained):
    spec = trained[0]
    version = mlflow.MlflowClient().get_model_version(spec.registered_model, register(trained, spec).version)
    assert {key: version.tags[key] for key in spec.search_space()} == {
        "warmup_ratio": "0.125", "lr_scheduler": "cosine", "freeze_vision_encoder": "True"}
    assert {key: version.tags[key] for key in ("model", "model_revision", "precision", "dataset", "dataset_revision",
                                               "max_caption_tokens", "num_beams", "max_new_tokens", "learning_rate")} == {
        "model": "tiny", "model_revision": "main", "dataset": "pitch", "dataset_revision": "main",
        "precision": mlflow.get_run(trained[2].run_id).data.params["precision_used"],  # what it trained in, not "auto"
        "max_caption_tokens": str(spec.max_caption_tokens), "num_beams": "1",
        "max_new_tokens": str(spec.max_new_tokens), "learning_rate": repr(spec.learning_rate)}
    listed = registry.list_models(spec.registered_model)[0]
    assert listed["tags"]["lr_scheduler"] == "cosine"  # what `models` and the UI read


class SmoothingSweep(ExperimentSpec):
    """Hypothesis: label smoothing helps."""

    def search_space(self):
        return {"trainer.label_smoothing_factor": FloatRange(0.0, 0.2)}


def test_a_version_carries_its_generation_settings_and_searched_trainer_entries(trained):
    spec = SmoothingSweep().tiny().replace(min_new_tokens=3, length_penalty=0.5, repetition_penalty=1.2,
                                           no_repeat_ngram_size=2, prompt="a photograph of",
                                           registered_model="smoothing", **{"trainer.label_smoothing_factor": 0.1})
    version = mlflow.MlflowClient().get_model_version("smoothing", register(trained, spec).version)
    assert {key: version.tags[key] for key in ("min_new_tokens", "length_penalty", "repetition_penalty",
                                               "no_repeat_ngram_size", "prompt", "trainer.label_smoothing_factor")} == {
        "min_new_tokens": "3", "length_penalty": "0.5", "repetition_penalty": "1.2", "no_repeat_ngram_size": "2",
        "prompt": "a photograph of", "trainer.label_smoothing_factor": "0.1"}


def test_a_loss_objective_is_registered_as_minimized(trained):
    spec = trained[0].replace(objective_metric="loss", registered_model="warmup-loss")
    version = register(trained, spec)
    assert mlflow.MlflowClient().get_model_version("warmup-loss", version.version).tags["objective_direction"] == "minimize"


def test_a_version_carries_its_test_objective_with_its_interval_and_its_card_the_worst_captions(trained):
    spec, _, result = trained
    spec = spec.replace(registered_model="warmup-evidence")
    version = mlflow.MlflowClient().get_model_version("warmup-evidence", register(trained, spec).version)
    run = mlflow.get_run(result.run_id).data
    assert float(version.tags["objective"]) == run.metrics["best_val_cider"] == result.objective
    assert float(version.tags["test_cider"]) == pytest.approx(run.metrics["test_cider"], rel=1e-5)
    low, high = float(version.tags["test_cider_ci_low"]), float(version.tags["test_cider_ci_high"])
    assert low <= float(version.tags["test_cider"]) <= high
    assert version.tags["test_signature"] == run.tags["test_signature"] == \
        f"bs:1000|seed:{spec.seed}|idf:corpus|images:{len(result.test.keys)}"
    assert version.tags["weights_digest"] == eval_cache.weights_digest(result.model_dir)
    card = mlflow.artifacts.load_text(f"runs:/{result.run_id}/model/artifacts/README.md")
    worst = result.test.worst("cider")
    assert "The worst test captions" in card and f"| `{worst[0][0]}` |" in card
