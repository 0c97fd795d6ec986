import mlflow
import pytest

from blipexp import tracking


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
