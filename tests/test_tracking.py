import json
import os
import re
import threading
import time

import mlflow
import pytest
from conftest import EXPERIMENTS
from processes import free_port

from blipexp import cli, tracking
from blipexp.experiment.spec import ExperimentSpec

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop


def test_store_and_artifacts_live_in_the_home_folder(home):
    uri = tracking.configure(home)
    assert uri == f"sqlite:///{home / 'mlflow.db'}" and mlflow.get_registry_uri() == uri
    experiment_id = tracking.use_experiment("exp", home)
    assert mlflow.get_experiment(experiment_id).artifact_location == (home / "artifacts").as_uri()
    assert tracking.use_experiment("exp", home) == experiment_id  # found again, not created twice


def test_an_unusable_home_is_a_clear_error_before_anything_runs(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="not writable.*--home DIR or set BLIPEXP_HOME"):
        tracking.configure(blocker / "mlruns")


def test_home_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("BLIPEXP_HOME", str(tmp_path / "env"))
    assert tracking.resolve_home(tmp_path / "arg") == tmp_path / "arg"
    assert tracking.resolve_home(None) == tmp_path / "env"
    monkeypatch.delenv("BLIPEXP_HOME")
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_home(None) == tmp_path / "mlruns"


def test_tracking_uri_order(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    assert tracking.tracking_uri(tmp_path) == "sqlite:////elsewhere/mlflow.db"
    assert tracking.tracking_uri(tmp_path, "http://127.0.0.1:5999") == "http://127.0.0.1:5999"


def test_configure_does_not_leak_its_uri_into_child_processes(home, monkeypatch):
    """MLflow exports the URI to os.environ; a child `blipexp --home OTHER` must not take it for the user's."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    tracking.configure(home)
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    assert mlflow.get_tracking_uri() == tracking.tracking_uri(home)


def test_a_store_that_cannot_be_opened_is_a_clear_error(home, tmp_path, monkeypatch):
    tracking.configure(home)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # a path under a file fails for root too, unlike chmod
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker}/store/mlflow.db")
    with pytest.raises(ValueError, match=r"tracking store sqlite:///.*a-file/store/mlflow.db cannot be opened "
                                         r"\(NotADirectoryError.*fix or unset \$MLFLOW_TRACKING_URI"):
        tracking.configure(home)
    with pytest.raises(ValueError, match="check the tracking URI you passed"):
        tracking.configure(home, f"sqlite:///{blocker}/store/mlflow.db")
    assert mlflow.get_tracking_uri() == f"sqlite:///{home / 'mlflow.db'}", "a failed configure changes nothing"


def test_start_run_yields_the_active_run_holding_the_spec(home):
    tracking.configure(home)
    tracking.use_experiment("exp", home)
    spec = ExperimentSpec().tiny().replace(learning_rate=3e-4)
    tags = tracking.run_tags(spec, "abc")
    with tracking.start_run(spec, run_name="one", tags=tags) as run:
        assert isinstance(run, tracking.Run) and run.id == mlflow.active_run().info.run_id
    stored = run.read()
    assert stored.info.status == "FINISHED" and stored.data.tags["profile"] == spec.profile == "tiny"
    assert stored.data.params["learning_rate"] == "0.0003" and stored.data.params["model"] == "tiny"
    assert "spec.json" in {a.path for a in mlflow.MlflowClient().list_artifacts(run.id)}


def test_an_interrupted_run_ends_killed_and_names_itself(home):
    tracking.configure(home)
    tracking.use_experiment("exp", home)
    spec = ExperimentSpec().tiny()
    with pytest.raises(KeyboardInterrupt) as raised, tracking.start_run(spec, run_name="stopped", tags={}) as run:
        raise KeyboardInterrupt
    assert raised.value.killed_run_id == run.id and run.read().info.status == "KILLED"


def _cli_run(home, env_changes, monkeypatch, capsys):
    """`blipexp run` in this process (a child process would only add its imports), with `env_changes` set."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env_changes.items():
        monkeypatch.setenv(name, value)
    code = cli.main(["run", "football_baseline", "--tiny", "--home", str(home), "--experiments", str(EXPERIMENTS)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", ["sqlite under a file", "dead server", "home under a file"])
def test_cli_run_stops_before_training_when_the_store_is_unusable(tmp_path, case, monkeypatch, capsys):
    """`blipexp run` exits 2 with one `error:` line naming the store and the fix; no data made, nothing trained."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    home = tmp_path / "home"
    env, expected = {
        "sqlite under a file": ({"MLFLOW_TRACKING_URI": f"sqlite:///{blocker}/store/mlflow.db"},
                                r"cannot be opened \(NotADirectoryError.*fix or unset \$MLFLOW_TRACKING_URI"),
        "dead server": ({"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"},
                        r"tracking server http://127\.0\.0\.1:\d+ cannot be reached .*Connection refused.*"
                        r"start it, or fix or unset \$MLFLOW_TRACKING_URI"),
        "home under a file": ({}, r"a-file/home is not writable .*--home DIR or set BLIPEXP_HOME"),
    }[case]
    if case == "home under a file":
        home = blocker / "home"
    code, out, err = _cli_run(home, env, monkeypatch, capsys)
    assert code == 2, out + err
    assert re.search(r"^error: .*" + expected, err, re.M), err
    assert "Traceback" not in err
    assert "data:" not in out and "epoch" not in out, "nothing loaded or trained"
    if case != "home under a file":
        assert not (home / "data").exists() and not (home / "checkpoints").exists()


def test_experiments_open_in_the_uis_model_training_view(home):
    tracking.configure(home)
    experiment_id = tracking.use_experiment("exp", home)
    assert mlflow.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    mlflow.MlflowClient().set_experiment_tag(experiment_id, "mlflow.experimentKind", "genai_development")
    tracking.use_experiment("exp", home)
    assert mlflow.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "genai_development", \
        "a kind the user chose in the UI is kept"


def test_the_printed_ui_links_ask_for_the_model_training_view_of_the_experiment(home):
    tracking.configure(home)
    experiment_id = tracking.use_experiment("exp", home)
    browse = tracking.ui_command(home, "exp")
    assert browse.startswith(f"python -m blipexp ui --home {home}")
    assert browse.endswith(f"then open   http://127.0.0.1:5000/#/experiments/{experiment_id}/runs"
                           "?workflowType=machine_learning")
    assert tracking.ui_command(home, "never-made").endswith("/#/experiments?workflowType=machine_learning")
    assert tracking.ui_link("https://mlflow.example/") == "https://mlflow.example/#/experiments?workflowType=machine_learning"


def test_a_legacy_experiment_without_a_kind_gets_one(home):
    tracking.configure(home)
    mlflow.create_experiment("old", artifact_location=(home / "artifacts").as_uri())
    experiment_id = tracking.use_experiment("old", home)
    assert mlflow.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.parametrize("enabled", [True, False])
def test_system_metrics_are_logged_unless_the_spec_turns_them_off(home, monkeypatch, enabled):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    tracking.configure(home)
    tracking.use_experiment("exp", home)
    spec = ExperimentSpec().tiny().replace(system_metrics=enabled)
    def monitors():  # MLflow samples in a thread of this name for the run's lifetime
        return [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor" and t.is_alive()]

    assert not monitors()
    with tracking.start_run(spec, run_name="one", tags={}) as run:
        assert len(monitors()) == int(enabled), "a monitor runs exactly when the spec asks for one"
        deadline = time.monotonic() + 30
        while enabled and not any(k.startswith("system/") for k in run.read().data.metrics):
            assert time.monotonic() < deadline, "no system metric logged in 30 s"
            time.sleep(0.2)
    assert not monitors(), "the monitor stops with the run"
    logged = set(run.read().data.metrics)
    assert run.read().data.params["system_metrics"] == json.dumps(enabled), "the switch is on the run"
    if enabled:
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= logged
    else:
        assert not any(k.startswith("system/") for k in logged)


def test_a_dataset_entity_is_logged_as_a_run_input(home):
    tracking.configure(home)
    tracking.use_experiment("exp", home)
    with tracking.start_run(ExperimentSpec().tiny(), run_name="one", tags={}) as run:
        run.dataset(name="pitch", digest="0123abcd", source_type="generated", source={"scenes": 60},
                    profile={"train_images": 42, "skipped": {"empty_caption": 1}}, context="train")
    [entry] = run.read().inputs.dataset_inputs
    assert (entry.dataset.name, entry.dataset.digest, entry.dataset.source_type) == ("pitch", "0123abcd", "generated")
    assert json.loads(entry.dataset.profile) == {"train_images": 42, "skipped": {"empty_caption": 1}}
    assert json.loads(entry.dataset.source) == {"scenes": 60}
    assert [(t.key, t.value) for t in entry.tags] == [("mlflow.data.context", "train")]


def test_appending_to_a_table_draws_no_download_bar(home, capfd):
    tracking.configure(home)
    tracking.use_experiment("exp", home)
    with tracking.start_run(ExperimentSpec().tiny().replace(system_metrics=False), run_name="one", tags={}) as run:
        for epoch in (0, 1):
            run.table({"epoch": [epoch], "prediction": ["a red player"]}, "samples.json")
    assert "Downloading artifacts" not in capfd.readouterr().err
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ, "switched off around the call only"
    assert list(mlflow.load_table("samples.json", run_ids=[run.id])["epoch"]) == [0, 1]
