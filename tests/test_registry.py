"""Registry on a real MLflow store in a temp dir: log + register a tiny trained model, predict, promote, export.

One tiny model is trained for the whole module. Two versions with different objectives are made by
registering the SAME model folder twice with different `objective` tags: promotion compares tags only, so
this tests the rules without a second training run.
"""
import base64

import mlflow
import pandas as pd
import pytest
from transformers import BlipForConditionalGeneration, BlipProcessor

from blipexp import registry, serving, tracking
from blipexp.cli import run as runner
from blipexp.data import load_data
from blipexp.experiment.spec import ExperimentSpec
from blipexp.registry import model_card, promotion
from blipexp.runtime import locks
from blipexp.tracking.scores import LoggedScores
from blipexp.training.train import train_trial

pytestmark = pytest.mark.slow

NAME = "blip-test"  # the promotion rules run on this model
CHAMPION = "blip-served"  # caption / export / list run on this one, promoted once


@pytest.fixture(scope="module")
def trained(tmp_path_factory, new_home):
    home = new_home()
    spec = ExperimentSpec().tiny().replace(pitch_scenes=60, epochs=1, train_batch_size=16, sample_captions=0,
                                           test_fraction=0.0)
    type(spec).name = "test_registry"
    tracking.configure(home)
    tracking.use_experiment("test_registry", home)
    data = load_data(spec, home)
    result = train_trial(spec, data, home, echo=False)
    return spec, data, result, home


def register(trained, name: str, objective: float, **extra_tags: str):
    spec, data, result, _ = trained
    tags = {"objective": str(objective), "objective_direction": "maximize", "learning_rate": str(spec.learning_rate),
            "epochs": str(spec.epochs), "data_fingerprint": data.fingerprint, **extra_tags}
    run = mlflow.get_run(result.run_id)
    card = model_card.render(spec, data, LoggedScores.of(run, "validation"), LoggedScores.of(run, "test"),
                             {"max_new_tokens": 8})
    return registry.log_and_register(result.model_dir, registered_model=name, run_id=result.run_id, tags=tags,
                                     description="tiny test model", generation={"max_new_tokens": 8}, card=card)


@pytest.fixture(scope="module")
def versions(trained):
    """Version 1 with the trial's objective, version 2 the same files tagged 0.5 worse."""
    objective = trained[2].objective
    return register(trained, NAME, objective), register(trained, NAME, objective - 0.5)


@pytest.fixture(scope="module")
def champion(trained):
    version = register(trained, CHAMPION, trained[2].objective)
    registry.promote(CHAMPION, str(version.version))
    return version


@pytest.fixture(scope="module")
def image_files(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, example in enumerate(trained[1].validation[:3]):
        path = folder / f"image{i}.png"
        trained[1].image(example).save(path)
        paths.append(path)
    return paths


def test_register_creates_a_version_from_the_trial_run(trained, versions):
    _, _, result, _ = trained
    first, second = versions
    assert (str(first.version), str(second.version)) == ("1", "2")  # MLflow 3.17 returns ints here
    assert first.run_id == result.run_id
    assert float(first.tags["objective"]) == pytest.approx(result.objective)
    assert first.description == "tiny test model"
    run = mlflow.get_run(result.run_id)
    assert run.info.status == "FINISHED", "the re-opened run is closed again with its old status"
    assert "max_new_tokens" in run.data.params  # the trial's own params survive untouched


def test_the_model_is_logged_as_code_with_its_card_and_without_mlflows_warnings(trained, caplog, recwarn):
    """Models-from-code: the MLmodel names blipexp's model file, no pickled object is stored, and MLflow neither warns
    about CloudPickle nor asks for type hints."""
    import logging

    from mlflow.models import Model

    with caplog.at_level(logging.WARNING):
        version = register(trained, "blip-from-code", 0.1)
    assert not [r for r in caplog.records if "CloudPickle" in r.getMessage()]
    assert not [w for w in recwarn if "type hints" in str(w.message)]
    local = mlflow.artifacts.download_artifacts(f"models:/blip-from-code/{version.version}")
    flavor = Model.load(f"{local}/MLmodel").flavors["python_function"]
    from pathlib import Path

    files = {p.name for p in Path(local).rglob("*")}
    assert "pyfunc_model.py" in files and "python_model.pkl" not in files
    assert flavor["artifacts"]["model_card"]["path"].endswith("README.md")
    card = (Path(local) / flavor["artifacts"]["model_card"]["path"]).read_text()
    assert card.startswith("---\n") and trained[1].fingerprint in card


def test_a_model_logged_as_a_pickled_object_before_models_from_code_still_loads(trained, image_files):
    _, _, result, _ = trained
    with mlflow.start_run(run_name="pickled"):
        info = mlflow.pyfunc.log_model(name="model", python_model=serving.BlipCaptioner(),
                                       artifacts={serving.ARTIFACT_KEY: str(result.model_dir)},
                                       pip_requirements=registry.pip_requirements())
    out = mlflow.pyfunc.load_model(info.model_uri).predict(pd.DataFrame({"image": [image_files[0].read_bytes()]}))
    assert isinstance(out["caption"][0], str) and out["error"][0] is None


def test_logging_keeps_the_run_end_time(trained):
    _, _, result, _ = trained
    before = mlflow.get_run(result.run_id).info
    register(trained, "blip-end-time", 0.1)
    after = mlflow.get_run(result.run_id).info
    assert (after.status, after.end_time) == (before.status, before.end_time)


def test_predict_takes_bytes_base64_and_paths(versions, image_files):
    """In-process, local files are pathlib.Path objects (text is never read as a path: see test_serving)."""
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    raw = [path.read_bytes() for path in image_files]
    inputs = {
        "bytes": pd.DataFrame({"image": raw}),
        "base64": pd.DataFrame({"image": [base64.b64encode(b).decode() for b in raw]}),
        "paths": pd.DataFrame({"image": list(image_files)}),
    }
    outputs = {kind: model.predict(frame) for kind, frame in inputs.items()}
    for kind, out in outputs.items():
        assert list(out.columns) == ["caption", "error"], kind
        assert len(out) == len(image_files), kind
        assert all(isinstance(text, str) for text in out["caption"]), kind
        assert all(error is None for error in out["error"]), kind
    assert list(outputs["bytes"]["caption"]) == list(outputs["paths"]["caption"]) == list(outputs["base64"]["caption"])


def test_predict_names_the_bad_row(versions, image_files):
    """A bad row gets its error and a null caption; the others are captioned."""
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    out = model.predict(pd.DataFrame({"image": [image_files[0], "/no/such/image.png",
                                                base64.b64encode(b"not an image").decode()]}))
    assert isinstance(out["caption"][0], str) and out["error"][0] is None
    assert out["caption"][1] is None and out["error"][1].startswith("row 1: not base64 image data")
    assert out["caption"][2] is None and out["error"][2].startswith("row 2: the data is not a readable image")


def test_predict_batches_and_takes_params(trained, versions, image_files, caplog):
    """batch_size=2 over three images: batches of 2 and 1 (each batch is logged at DEBUG); max_new_tokens=2."""
    import logging

    model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    frame = pd.DataFrame({"image": list(image_files)})
    with caplog.at_level(logging.DEBUG, logger="blipexp.serving.batcher"):
        out = model.predict(frame, params={"batch_size": 2, "max_new_tokens": 2})
    assert [r.getMessage().split(" from ")[0] for r in caplog.records] == ["batch of 2", "batch of 1"]
    assert all('"batch_size": 2' in r.getMessage() and '"max_new_tokens": 2' in r.getMessage()
               for r in caplog.records)
    assert len(out) == len(image_files)
    assert all(len(text.split()) <= 2 for text in out["caption"]), "two new tokens make at most two words"
    assert list(out["caption"]) == list(model.predict(frame, params={"max_new_tokens": 2})["caption"]), \
        "the same captions in one batch of 3"


def test_the_served_model_generates_with_its_registered_settings(trained, image_files):
    """generation.json carries the spec's generation fields to the pyfunc; per-call params override them."""
    from blipexp.model import generation

    spec, _, result, _ = trained
    words = trained[1].validation[0].captions[0].split()[:2]  # a prompt in the tiny model's vocabulary
    settings = {**generation.settings(spec), "prompt": " ".join(words), "min_new_tokens": 6, "max_new_tokens": 6}
    tags = {"objective": "0.1", "data_fingerprint": trained[1].fingerprint}
    version = registry.log_and_register(result.model_dir, registered_model="blip-generation", run_id=result.run_id,
                                        tags=tags, description="", generation=settings)
    model = mlflow.pyfunc.load_model(f"models:/blip-generation/{version.version}")
    assert {p.name: p.default for p in model.metadata.get_params_schema().params}["prompt"] == settings["prompt"]
    frame = pd.DataFrame({"image": list(image_files)})  # in-process: pathlib paths are read, text never
    served = list(model.predict(frame)["caption"])
    hf = BlipForConditionalGeneration.from_pretrained(result.model_dir).eval()
    processor = BlipProcessor.from_pretrained(result.model_dir)
    pixels = processor(images=[trained[1].image(e) for e in trained[1].validation[:3]], return_tensors="pt")
    assert served == generation.captions(hf, processor.tokenizer, pixels["pixel_values"], settings), \
        "the served captions are the prompt-conditioned ones, the prompt cut off"
    lengths = [len(processor.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in served]
    assert all(n >= 5 for n in lengths), f"min_new_tokens=6 forces long captions, got {lengths}"
    short = model.predict(frame, params={"min_new_tokens": 0, "max_new_tokens": 2, "prompt": ""})
    assert all(len(text.split()) <= 2 for text in short["caption"]), "per-call params override the registered ones"


def test_promotion_rules(versions):
    """The gate itself, with a judge that decides as told (the real one, on test images: tests/test_assess.py)."""
    verdicts = []

    def judge(candidate, holder):
        verdicts.append((str(candidate.version), str(holder.version)))
        refusal = "version 2 is significantly worse than version 1" if candidate.version == 2 else None
        return registry.Judgement(refusal, "the comparison", {"promote_p_value": "0.01"})

    assert "version 1 (was nothing)" in registry.promote(NAME, "1", judge=judge)
    assert verdicts == [], "nothing to compare with"
    promoted_at = mlflow.MlflowClient().get_model_version(NAME, "1").tags["promoted_at"]

    printed = []
    with pytest.raises(ValueError, match="significantly worse than version 1; nothing changed .--force"):
        registry.promote(NAME, "2", judge=judge, echo=printed.append)
    assert verdicts == [("2", "1")] and printed == ["the comparison"]
    client = mlflow.MlflowClient()
    assert client.get_registered_model(NAME).aliases == {"champion": 1}  # alias -> int version
    assert "promote_p_value" not in client.get_model_version(NAME, "2").tags

    message = registry.promote(NAME, "1", judge=judge)
    assert "already points to version 1" in message and "nothing changed" in message
    assert client.get_model_version(NAME, "1").tags["promoted_at"] == promoted_at

    assert "version 2 (was version 1) [forced]" in registry.promote(NAME, "2", force=True, judge=judge)
    assert client.get_registered_model(NAME).aliases == {"champion": 2}
    tags = client.get_model_version(NAME, "2").tags
    assert tags["previous_champion"] == "1" and "promoted_at" in tags
    assert tags["promote_forced"] == "True" and tags["promote_p_value"] == "0.01", "the evidence is recorded"


def test_a_holder_replaced_during_the_comparison_is_judged_again(trained):
    for _ in range(3):
        register(trained, "blip-moving", trained[2].objective)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("blip-moving", "champion", "1")
    judged = []

    def judge(candidate, holder):
        judged.append(str(holder.version))
        if len(judged) == 1:  # meanwhile another promote moves the alias
            client.set_registered_model_alias("blip-moving", "champion", "2")
        return registry.Judgement(None, "", {})

    assert "-> version 3 (was version 2)" in registry.promote("blip-moving", "3", judge=judge)
    assert judged == ["1", "2"], "never moved on evidence about a holder that is gone"


def test_unknown_model_and_version_name_the_known_ones(versions):
    with pytest.raises(ValueError, match=f"registered model 'nope' not found; known: .*{NAME}"):
        registry.promote("nope", "1")
    with pytest.raises(ValueError, match=f"{NAME} has no version '9'; known versions: 1, 2"):
        registry.promote(NAME, "9")
    with pytest.raises(ValueError, match="not found"):
        registry.list_models("nope")


def test_caption_from_the_champion_alias(champion, image_files):
    captions = serving.caption(f"models:/{CHAMPION}@champion", [str(p) for p in image_files])
    assert len(captions) == len(image_files) and all(isinstance(c, str) for c in captions)
    with pytest.raises(ValueError, match="no such image file"):
        serving.caption(f"models:/{CHAMPION}@champion", ["/no/such.png"])


def trained_fingerprint(version) -> str:
    return version.tags["data_fingerprint"]


def test_export_gives_a_from_pretrained_folder_with_the_model_card(champion, image_files, tmp_path):
    out = serving.export(f"models:/{CHAMPION}@champion", tmp_path / "export")
    model = BlipForConditionalGeneration.from_pretrained(out)
    processor = BlipProcessor.from_pretrained(out)
    from PIL import Image

    pixels = processor(images=[Image.open(image_files[0]).convert("RGB")], return_tensors="pt")["pixel_values"]
    assert model.generate(pixel_values=pixels, max_new_tokens=4).shape[0] == 1
    card = (out / "README.md").read_text()  # the version's model card, as a Hub model card
    import yaml

    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["pipeline_tag"] == "image-to-text" and meta["library_name"] == "transformers"
    assert trained_fingerprint(champion) in card
    with pytest.raises(ValueError, match="not empty"):
        serving.export(f"models:/{CHAMPION}@champion", out)


def test_list_models_shows_aliases_and_objectives(champion):
    rows = registry.list_models(CHAMPION)
    assert [(r["version"], r["aliases"]) for r in rows] == [("1", ["champion"])]
    assert rows[0]["objective"] == champion.tags["objective"]
    every = registry.list_models()
    assert {r["name"] for r in every} >= {CHAMPION}
    created = [r["created_ms"] for r in every]
    assert created == sorted(created, reverse=True), "newest first"
    table = registry.format_models(rows)
    assert CHAMPION in table and "champion" in table and rows[0]["run_id"] in table
    assert "no registered models" in registry.format_models([])


def test_promotion_refuses_a_version_whose_files_are_gone(trained):
    import shutil
    from urllib.parse import urlparse

    version = register(trained, "blip-broken", 0.9)
    model_id = version.source.removeprefix("models:/")  # MLflow 3: versions point at a logged model
    shutil.rmtree(urlparse(mlflow.get_logged_model(model_id).artifact_location).path)
    with pytest.raises(ValueError, match="models:/blip-broken/1 does not load"):
        registry.promote("blip-broken", "1")
    assert mlflow.MlflowClient().get_registered_model("blip-broken").aliases == {}


def test_requirements_are_pinned_not_inferred():
    pins = registry.pip_requirements()
    assert [p.split("==")[0] for p in pins] == list(registry.REQUIRED_PACKAGES)
    assert all("+" not in p for p in pins), "local version tags such as +cpu are not installable"


def served_captions(model_uri: str, images) -> list[str]:
    """Captions of `images` from MLflow's scoring app serving `model_uri` (tests/scoring_app.py: in this process;
    REST scoring by `mlflow models serve`'s own processes is tests/test_serving.py's, of a champion alias)."""
    from scoring_app import scoring_app

    from blipexp.bench.server import json_body, post

    with scoring_app(model_uri) as app:
        answer = post(app, *json_body([p.read_bytes() for p in images]))
    assert answer.status == 200, answer.body
    return [row["caption"] for row in answer.body["predictions"]]


def test_a_lora_sweep_registers_a_merged_model_that_promotes_captions_exports_and_serves(trained, image_files,
                                                                                         tmp_path):
    """football_lora (2 short trials over lora_r) -> register -> promote -> caption -> export -> serve."""
    import optuna
    from mlflow.models import Model

    from blipexp import cli
    from blipexp.sweep import optuna_storage

    home = trained[3]  # the module's store: tracking is configured process-wide
    name = "blip-football-lora-tiny"
    argv = ["run", "football_lora", "--tiny", "--home", str(home), "--trials", "2", "--set", "epochs=1",
            "--set", "pitch_scenes=40", "--set", "sample_captions=0", "--set", "test_fraction=0"]
    assert cli.main(argv) == 0
    study = optuna.load_study(study_name="football_lora-tiny", storage=optuna_storage(home))
    assert [sorted(t.params) for t in study.trials] == [["learning_rate", "lora_r"]] * 2
    tracking.configure(home)
    [version] = registry.versions_of(mlflow.MlflowClient(), name)
    assert version.tags["adapter"] == "lora" and version.tags["lora_r"] in ("4", "8", "16")
    params = mlflow.get_run(version.run_id).data.params
    assert int(params["trainable_parameters"]) < int(params["total_parameters"]) / 10

    logged = mlflow.artifacts.download_artifacts(f"models:/{name}/{version.version}", dst_path=str(tmp_path / "dl"))
    entries = Model.load(f"{logged}/MLmodel").flavors["python_function"]["artifacts"]
    adapter = tmp_path / "dl" / entries["adapter"]["path"]
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()

    registry.promote(name, version.version)  # loads the pyfunc and captions the example image first
    uri = f"models:/{name}@champion"
    captions = serving.caption(uri, [str(p) for p in image_files[:2]])
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)

    out = serving.export(uri, tmp_path / "export")
    assert not list(out.glob("adapter*")), "the export is a plain checkpoint: no adapter files"
    model, info = BlipForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not any("lora_" in key or "base_layer" in key for key in model.state_dict())
    assert "peft" not in (out / "config.json").read_text()

    assert served_captions(uri, image_files[:2]) == captions


def _model_files(version):
    """The folder of a version's logged model on disk (MLflow 3: versions point at a logged model)."""
    from pathlib import Path
    from urllib.parse import urlparse

    model_id = version.source.removeprefix("models:/")
    return Path(urlparse(mlflow.get_logged_model(model_id).artifact_location).path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_promotion_refuses_a_version_whose_weights_are_corrupt(trained, damage):
    name = f"blip-corrupt-{damage}"
    version = register(trained, name, 0.9)
    weights = list(_model_files(version).rglob("model.safetensors"))
    assert len(weights) == 1, "the logged model holds one weights file"
    data = weights[0].read_bytes()
    # same name, damaged content: noise, or the first half as a full disk or a killed copy leaves it
    weights[0].write_bytes(b"\x00" * 64 + b"not safetensors" if damage == "garbage" else data[:len(data) // 2])
    with pytest.raises(ValueError, match=f"models:/{name}/1 does not load .*missing or damaged") as refused:
        registry.promote(name, "1")
    print(f"{damage} weights: {refused.value}")
    client = mlflow.MlflowClient()
    assert client.get_registered_model(name).aliases == {}
    assert "promoted_at" not in client.get_model_version(name, "1").tags


def test_promotion_refuses_a_version_whose_weights_file_is_empty(trained):
    """A valid safetensors file without tensors opens, and transformers would fill the model with random values."""
    from safetensors.torch import save_file

    version = register(trained, "blip-empty", 0.9)
    weights = list(_model_files(version).rglob("model.safetensors"))
    assert len(weights) == 1, "the logged model holds one weights file"
    save_file({}, weights[0])
    with pytest.raises(ValueError, match="models:/blip-empty/1 does not load .*lacks .* of the model's tensors"):
        registry.promote("blip-empty", "1")
    assert mlflow.MlflowClient().get_registered_model("blip-empty").aliases == {}


def test_promotion_refuses_a_version_that_loads_but_cannot_caption(trained):
    """Damage that only shows when captioning (an image processor resizing to 0 pixels) is caught by the check."""
    import json

    version = register(trained, "blip-no-caption", 0.9)
    config = next(_model_files(version).rglob("processor_config.json"))
    settings = json.loads(config.read_text())
    settings["image_processor"]["size"] = {"height": 0, "width": 0}
    config.write_text(json.dumps(settings))
    mlflow.pyfunc.load_model("models:/blip-no-caption/1")  # it loads: only generating shows the damage
    with pytest.raises(ValueError, match="models:/blip-no-caption/1 does not load"):
        registry.promote("blip-no-caption", "1")
    assert mlflow.MlflowClient().get_registered_model("blip-no-caption").aliases == {}


def test_promote_gives_up_on_a_held_lock_with_a_clear_error(versions, monkeypatch):
    monkeypatch.setattr(promotion, "PROMOTE_LOCK_TIMEOUT_S", 0.2)
    store = mlflow.get_registry_uri().removeprefix("sqlite:///")
    with locks.file_lock(f"{store}.promote.lock"):  # as another promote would hold it
        with pytest.raises(ValueError, match=r"held the lock .*\.promote\.lock for over 0.2 s: wait"):
            registry.promote(NAME, "1", alias="held")
    assert "held" not in mlflow.MlflowClient().get_registered_model(NAME).aliases


@pytest.mark.parametrize("name", ["blip-it's", 'blip-"quoted"'])
def test_versions_of_a_name_holding_a_quote(trained, name):
    """MLflow filter strings have no escapes: the registry and the sweep runner find the versions all the same."""
    sweep_run_id = "sweep-run-of-" + name
    register(trained, name, 0.3, sweep_run_id=sweep_run_id)
    client = mlflow.MlflowClient()
    assert [str(v.version) for v in registry.versions_of(client, name)] == ["1"]
    assert [r["version"] for r in registry.list_models(name)] == ["1"]
    with pytest.raises(ValueError, match="has no version '7'; known versions: 1"):
        registry.promote(name, "7")
    spec = ExperimentSpec().replace(registered_model=name)
    found = runner._sweep_version(spec, sweep_run_id)
    assert found is not None and str(found.version) == "1", "a re-run sweep finds its version, not registers again"
    assert runner._sweep_version(spec, "another-sweep") is None


def test_a_name_holding_both_quotes_is_refused_clearly():
    with pytest.raises(ValueError, match="holds both ' and \": MLflow cannot search for it"):
        registry.versions_of(mlflow.MlflowClient(), "it's \"x\"")


def test_concurrent_promotions_are_serialised(trained, tmp_path, capsys, monkeypatch):
    """Two promotes at once on one store end as if run one after the other: one alias, consistent history tags.

    The race is forced, not hoped for: a `promote` process reads "no holder" while this process, having read the
    same, holds the promote lock (inside its load check); what must not happen is that both then record
    previous_champion=none. Both versions carry the same objective, so the later one may replace the earlier."""
    import os
    import subprocess
    import sys
    import time

    from fault_hooks import __file__ as hooks

    from blipexp import cli
    from blipexp.registry import promotion

    _, _, result, home = trained
    for _ in range(2):
        register(trained, "blip-race", result.objective)
    marker = tmp_path / "read"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    other = []
    original = promotion._check_loads

    def check_loads(name, version):  # under this process's lock: the other process reads the holder meanwhile
        other.append(subprocess.Popen([sys.executable, hooks, "promote:read", str(marker), "promote", "blip-race",
                                       "--version", "1", "--home", str(home)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert other[0].poll() is None, other[0].communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the other promote did not read the holder within 180 s"
            time.sleep(0.05)
        original(name, version)

    monkeypatch.setattr(promotion, "_check_loads", check_loads)
    assert cli.main(["promote", "blip-race", "--version", "2", "--home", str(home)]) == 0
    monkeypatch.undo()
    mine = capsys.readouterr().out
    out, err = other[0].communicate(timeout=180)
    assert other[0].returncode == 0, err[-3000:]
    assert "blip-race@champion -> version 2 (was nothing)" in mine
    assert "blip-race@champion -> version 1 (was version 2)" in out, "judged again against the new holder"

    client = mlflow.MlflowClient()
    assert str(client.get_registered_model("blip-race").aliases["champion"]) == "1"
    tags = {v: client.get_model_version("blip-race", v).tags for v in ("1", "2")}
    assert tags["2"]["previous_champion"] == "none"
    assert tags["1"]["previous_champion"] == "2"
    assert tags["2"]["promoted_at"] <= tags["1"]["promoted_at"]  # ISO-8601 UTC strings sort by time
