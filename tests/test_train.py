"""The real path on the tiny model: Trainer, collator, generation-based evaluation, MLflow store in a temp dir."""
import json
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import torch
from transformers import BlipForConditionalGeneration, BlipProcessor, TrainerCallback

from blipexp import tracking
from blipexp.data import load_data
from blipexp.experiment.spec import ExperimentSpec
from blipexp.model import precision
from blipexp.model.modeling import adapter_dir
from blipexp.model.tiny import build_tiny_model, build_tiny_processor
from blipexp.scoring import evidence
from blipexp.scoring.evaluation import cider_document_frequency
from blipexp.scoring.metrics import caption_scores
from blipexp.training.train import train_trial

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop

SMALL = dict(pitch_scenes=60, epochs=2, train_batch_size=8, sample_captions=3)  # 12 steps: enough to move a pretrained start


def tiny_spec(**changes) -> ExperimentSpec:
    spec = ExperimentSpec().tiny().replace(**{**SMALL, **changes})
    type(spec).name = "test_experiment"
    return spec


@pytest.fixture(scope="module")
def trained(new_home):
    """One short training run, with every generate() call recorded."""
    home = new_home()
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
        assert set(kwargs) == {"pixel_values", "max_new_tokens", "num_beams", "min_new_tokens", "length_penalty",
                               "repetition_penalty", "no_repeat_ngram_size"}, "no input_ids: there is no prompt"


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


def test_final_scores_carry_intervals_signatures_and_per_image_tables(trained):
    spec, data, result, _, home = trained
    tracking.configure(home)
    run = mlflow.get_run(result.run_id).data
    assert len(result.test.keys) < evidence.MIN_IMAGES <= len(result.validation.keys), "one split on each side"
    assert not any(key.startswith("test_") and "_ci_" in key for key in run.metrics), "too few test images"
    for prefix, split, scores in (("best_val", "validation", result.validation), ("test", "test", result.test)):
        for key in ("cider", "bleu4", "rougeL") if prefix == "best_val" else ():
            low, high = run.metrics[f"{prefix}_{key}_ci_low"], run.metrics[f"{prefix}_{key}_ci_high"]
            assert low <= run.metrics[f"{prefix}_{key}"] <= high and low < high, (prefix, key)
        assert run.tags[f"{prefix}_signature"] == f"bs:1000|seed:42|idf:corpus|images:{len(scores.keys)}"
        table = tracking.Run(result.run_id).table_columns(f"per_image/{split}.json")
        assert {"key", "image", "prediction", "references", "cider", "bleu4", "rougeL", "bleu_stats"} <= set(table)
        assert table["key"] == [e.key for e in getattr(data, split)] and table["prediction"] == scores.predictions
        assert all(cell["type"] == "image" for cell in table["image"]), "each image's picture, which the UI shows"
        assert sum(table["cider"]) / len(table["cider"]) == pytest.approx(run.metrics[f"{prefix}_cider"])


def test_the_run_records_its_environment_and_its_datas_manifest(trained):
    from blipexp.data import manifest
    from blipexp.runtime import environment

    spec, data, result, _, _ = trained
    run = mlflow.get_run(result.run_id)
    recorded = tracking.Run(result.run_id).logged_dict(environment.ARTIFACT)
    assert recorded["packages"]["transformers"] == __import__("transformers").__version__
    assert recorded["precision_used"] == run.data.params["precision_used"]
    assert run.data.params["env_torch"] == torch.__version__
    assert run.data.params["env_blipexp_commit"] == recorded["blipexp"]["commit"] == run.data.tags["git_commit"]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id)}
    assert (environment.DIFF_ARTIFACT in artifacts) == bool(recorded["blipexp"]["dirty"])
    logged = json.loads(mlflow.artifacts.load_text(f"runs:/{result.run_id}/{manifest.ARTIFACT}"))
    assert logged == manifest.build(data) and logged["fingerprint"] == run.data.tags["data_fingerprint"]


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
    assert result.best_epoch == lowest
    # the objective is the best model's loss as served (fp32, the whole split): the epoch's, up to its precision
    assert result.objective == result.val_metrics["loss"] == pytest.approx(losses[lowest], rel=0.05)


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
    files = [[image["filepath"] for image in table[table["epoch"] == epoch]["image"]] for epoch in (0, 1, 2)]
    assert files[0] == files[1] == files[2] and len(set(files[0])) == spec.sample_captions, \
        "each picture is stored once, every epoch's rows point at it"
    stored = Path(mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/table_images"))
    assert len(list((stored / "val_samples_by_epoch").iterdir())) == spec.sample_captions
    assert len(list((stored / "val_samples").iterdir())) == spec.sample_captions, "val_samples.json stores its own"
    references = dict(zip(table["key"], table["references"]))
    assert references[data.validation[0].key] == " | ".join(data.validation[0].captions)
    assert set(table[table["epoch"] == 0]["prediction"]) != set(table[table["epoch"] == 2]["prediction"])
    sized_like_the_samples = [c for c in calls if len(c[1]["pixel_values"]) == spec.sample_captions]
    assert not sized_like_the_samples, "no generation for the tables: each reuses the captions of an evaluation"
    final = mlflow.load_table("val_samples.json", run_ids=[result.run_id])
    served = dict(zip(result.validation.keys, result.validation.predictions))
    assert list(final["prediction"]) == [served[key] for key in final["key"]], "the final validation's captions"


@pytest.mark.parametrize("flush_seconds, writes", [(30.0, [[0], [1, 2], [3]]), (0.0, [[0], [1], [2], [3]])])
def test_sample_rows_are_written_at_most_every_flush_seconds_and_all_when_training_ends(
        trained, monkeypatch, flush_seconds, writes):
    """On the table's own clock each epoch takes 20 s, however long it takes on this machine: with 30 s between
    writes epoch 0's rows are written at once (they store the pictures), epochs 1 and 2's together once 30 s have
    passed, epoch 3's when training ends."""
    from blipexp.training import samples
    from blipexp.training.samples import SampleCaptions

    spec, data, _, _, home = trained
    tracking.configure(home)
    monkeypatch.setattr(tracking, "WRITE_EVERY_SECONDS", flush_seconds)
    now = [0.0]
    monkeypatch.setattr(samples, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    log_epoch, write, tables = SampleCaptions.log_epoch, tracking.Run.table, []

    def epoch_of_20_s(self, epoch, metrics):
        now[0] = 20.0 * epoch
        log_epoch(self, epoch, metrics)

    def counted(self, data, artifact_file):
        if artifact_file == SampleCaptions.ARTIFACT:
            tables.append(sorted(set(data["epoch"])))
        write(self, data, artifact_file)

    monkeypatch.setattr(SampleCaptions, "log_epoch", epoch_of_20_s)
    monkeypatch.setattr(tracking.Run, "table", counted)
    result = train_trial(spec.replace(epochs=3), data, home, echo=False)
    assert tables == writes, "the epochs of each write"
    table = mlflow.load_table("val_samples_by_epoch.json", run_ids=[result.run_id])
    assert sorted(set(table["epoch"])) == [0, 1, 2, 3] and len(table) == 4 * spec.sample_captions


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


class SpoilTheLastEpoch(TrainerCallback):
    """Drowns the LoRA weights in noise after the last epoch's training, before its evaluation: an earlier epoch
    is the best one, and only loading it back (load_best_model_at_end) saves a model that scores as it did."""

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if state.epoch >= args.num_train_epochs:
            with torch.no_grad(), torch.random.fork_rng():
                torch.manual_seed(0)
                for name, p in model.named_parameters():
                    if "lora_" in name:
                        p.add_(torch.randn_like(p) * 100)


def test_lora_trial_saves_its_best_epoch_merged_and_the_adapter_beside(home):
    spec = tiny_spec(adapter="lora", learning_rate=1e-2, epochs=3, sample_captions=1, test_fraction=0.0)
    tracking.configure(home)
    tracking.use_experiment("test_experiment", home)
    data = load_data(spec, home)
    result = train_trial(spec, data, home, echo=False, callbacks=[SpoilTheLastEpoch()])
    assert result.best_epoch < spec.epochs, "the spoiled last epoch must not be the best"
    params = mlflow.get_run(result.run_id).data.params
    assert 0 < int(params["trainable_parameters"]) < int(params["total_parameters"]) / 10
    assert params["adapter"] == "lora" and params["lora_r"] == "8"

    model, info = BlipForConditionalGeneration.from_pretrained(result.model_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not any("lora_" in key for key in model.state_dict()), "the adapter is merged into the weights"
    assert not (result.model_dir / "adapter_config.json").exists()
    assert (adapter_dir(result.model_dir) / "adapter_model.safetensors").is_file()
    processor = BlipProcessor.from_pretrained(result.model_dir)
    pixels = processor(images=[data.image(e) for e in data.validation], return_tensors="pt")["pixel_values"]
    captions = processor.batch_decode(model.generate(pixel_values=pixels, max_new_tokens=spec.max_new_tokens),
                                      skip_special_tokens=True)
    idf = cider_document_frequency(spec, data, len(data.validation), echo=False)
    reloaded = caption_scores(captions, [list(e.captions) for e in data.validation], idf)["cider"]
    assert reloaded == pytest.approx(result.objective, abs=1e-6), "the saved model is the best epoch's"


def test_untrained_key_ignores_training_knobs_only():
    from blipexp.training.train import untrained_key

    spec = tiny_spec()
    key = untrained_key(spec, "data", "fp32")
    assert untrained_key(spec.replace(learning_rate=1e-4, epochs=9, freeze_vision_encoder=True), "data", "fp32") == key
    assert untrained_key(spec.replace(adapter="lora", lora_r=16), "data", "fp32") == key, "LoRA starts as the base model"
    for changed in (spec.replace(seed=1), spec.replace(max_new_tokens=5), spec.replace(val_subset=3)):
        assert untrained_key(changed, "data", "fp32") != key
    assert untrained_key(spec, "other data", "fp32") != key
    assert untrained_key(spec, "data", "bf16") != key, "scores made in bf16 are not fp32's"


def test_the_training_only_fields_hold_the_not_training_ones_and_name_real_fields():
    """One list each (resume.NOT_TRAINING inside train.TRAINING_ONLY): a field added to neither changes both keys."""
    from blipexp.training.resume import NOT_TRAINING
    from blipexp.training.train import TRAINING_ONLY

    assert NOT_TRAINING < TRAINING_ONLY < set(ExperimentSpec().to_dict())


def test_keys_and_tags_name_the_precision_used_never_auto(home, monkeypatch):
    """Workers of one sweep on CPUs with and without bf16 units must not share epoch-0 scores, and a run must not
    resume across a precision change: the keys hold what precision=auto resolves to on this machine."""
    from blipexp.training import resume
    from blipexp.training.train import untrained_key

    spec = tiny_spec(precision="auto")
    for chosen in ("fp32", "bf16"):  # what the probe decides on a CPU without and with fast bf16
        monkeypatch.setattr(precision, "decide", lambda gflops, chosen=chosen: precision.Choice(chosen, "", gflops))
        assert precision.used(spec, home) == chosen
        assert precision.used(spec.replace(precision="fp32"), home) == "fp32", "an explicit precision is kept"
    monkeypatch.undo()
    assert precision.used(spec, home) == precision.choose("auto", build_tiny_model(
        build_tiny_processor(["a ball"]), seed=0), home).precision, "the config's shapes: the loaded model's probe"
    assert untrained_key(spec, "data", "fp32") != untrained_key(spec, "data", "bf16")
    assert resume.resume_key(spec, "data", "fp32") != resume.resume_key(spec, "data", "bf16")


def test_untrained_key_follows_the_pretrained_recipe(monkeypatch):
    """A sweep resumed after the tiny model's recipe changed must not reuse the old weights' untrained scores."""
    import dataclasses

    from blipexp.model import pretrain
    from blipexp.training.train import untrained_key

    spec = tiny_spec()
    key = untrained_key(spec, "data", "fp32")
    monkeypatch.setattr(pretrain, "RECIPE", dataclasses.replace(pretrain.RECIPE, seed=pretrain.RECIPE.seed + 1))
    assert untrained_key(spec, "data", "fp32") != key


class _PrecisionSeen(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        self.bf16, self.fp16 = args.bf16, args.fp16


def test_auto_precision_trains_in_the_probes_choice_and_logs_it(home, monkeypatch):
    """Probe figures seeded in the home's cache (bf16 twice as fast) decide the real run's precision."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = tiny_spec(epochs=1, sample_captions=0)
    assert spec.precision == "auto"
    tracking.configure(home)
    tracking.use_experiment("test_experiment", home)
    model = build_tiny_model(build_tiny_processor(["a red player"]), seed=0)  # the shapes depend on the config only
    seeded = {"fp32": 100.0, "bf16": 200.0}
    shapes = precision.model_shapes(model)
    (home / "cache" / "precision.json").unlink(missing_ok=True)  # the session's real probe, copied by conftest
    precision.cached_probe(home, shapes, lambda shapes: seeded)
    expected = precision.decide(seeded)
    seen = _PrecisionSeen()
    result = train_trial(spec, load_data(spec, home), home, echo=False, callbacks=[seen])
    run = mlflow.get_run(result.run_id)
    assert run.data.params["precision_used"] == expected.precision
    assert run.data.params["precision_reason"] == expected.reason + " (cached)"
    assert run.data.params["precision"] == "auto", "the spec's own value is kept beside what was used"
    assert run.data.metrics["precision_probe_bf16_gflops"] == 200.0
    assert (seen.bf16, seen.fp16) == (expected.precision == "bf16", False), "the Trainer trains in the chosen one"


def test_a_prompt_and_a_trainer_pass_through_reach_training(home, monkeypatch):
    """prompt: every training batch starts with it, masked out of the loss, and evaluation generates from it;
    trainer.label_smoothing_factor: the Trainer's own arguments carry it, and the run logs it as a param."""
    from transformers import TrainerCallback

    spec = tiny_spec(epochs=1, sample_captions=0, test_fraction=0.0, prompt="a photograph of").with_overrides(
        ["trainer.label_smoothing_factor=0.1"])
    tracking.configure(home)
    tracking.use_experiment("test_experiment", home)
    batches, prompts, trainer_args = [], [], []
    forward, generate = BlipForConditionalGeneration.forward, BlipForConditionalGeneration.generate

    def recording_forward(self, *args, **kwargs):
        batches.append((kwargs["input_ids"], kwargs["labels"]))
        return forward(self, *args, **kwargs)

    def recording_generate(self, *args, **kwargs):
        prompts.append(kwargs["input_ids"].clone())  # generate() overwrites the first id in place
        return generate(self, *args, **kwargs)

    class ArgsSeen(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            trainer_args.append(args)

    monkeypatch.setattr(BlipForConditionalGeneration, "forward", recording_forward)
    monkeypatch.setattr(BlipForConditionalGeneration, "generate", recording_generate)
    result = train_trial(spec, load_data(spec, home), home, echo=False, callbacks=[ArgsSeen()])

    assert trainer_args[0].label_smoothing_factor == 0.1
    assert mlflow.get_run(result.run_id).data.params["trainer.label_smoothing_factor"] == "0.1"
    tokenizer = BlipProcessor.from_pretrained(result.model_dir).tokenizer
    prompt = tokenizer.convert_tokens_to_ids(["a", "photograph", "of"])
    assert tokenizer.unk_token_id not in prompt, "the tiny vocabulary knows the prompt's words"
    assert batches and prompts
    for input_ids, labels in batches:
        assert (input_ids[:, 1:4] == torch.tensor(prompt)).all()
        assert (labels[:, :4] == -100).all() and (labels[:, 4] != -100).any()
    assert all(ids[0, 1:4].tolist() == prompt for ids in prompts), "captions are generated from the prompt"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # what precision=auto may pick: the numbers differ
def test_early_stopping_ends_a_run_that_stops_improving_and_logs_when_and_why(home, capsys, precision):
    """With a threshold no epoch can beat, the rule stops after patience epochs past the first, whatever the scores;
    the model kept is still the best epoch's by its score."""
    spec = tiny_spec(epochs=4, sample_captions=0, early_stopping_patience=1, early_stopping_threshold=1e9,
                     precision=precision, pitch_scenes=30, test_fraction=0.0, max_new_tokens=8)  # cheap: 2 epochs
    tracking.configure(home)
    tracking.use_experiment("test_experiment", home)
    result = train_trial(spec, load_data(spec, home), home)  # no epoch can improve by more than 1e9
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    scores = {int(h["epoch"]): h["cider"] for h in result.history if h["epoch"] >= 1}
    assert scores[result.best_epoch] == max(scores.values()), "the best epoch's model is kept, as without stopping"
    run = mlflow.get_run(result.run_id)
    assert run.data.params["precision_used"] == precision
    assert run.info.status == "FINISHED" and run.data.metrics["stopped_epoch"] == 2
    reason = run.data.tags["stop_reason"]
    # the rule's reference is the first trained epoch: no later one improved on it by the threshold
    assert reason == f"no improvement of cider > 1e+09 for 1 epoch(s) (last improvement: {scores[1]:.4g} at epoch 1)"
    assert run.data.params["early_stopping_patience"] == "1"
    assert f"  early stop after epoch 2: {reason}" in capsys.readouterr().out.splitlines()
    assert sorted(m.step for m in mlflow.MlflowClient().get_metric_history(result.run_id, "val_cider")) == [0, 1, 2]
