"""Scale-out: the helpers the secured stack's shared sweep uses (tests/test_access.py: PostgreSQL, an MLflow
tracking server, sweep workers that share nothing but those two, one SIGKILLed in the middle of a trial), and the
recovery of a study whose trials stop behind its back. PostgreSQL must be installed (Debian: apt-get install
postgresql; .ci/run does it): without it the stack's tests skip, and fail under CI=true.
"""
from __future__ import annotations

import glob
import os
import subprocess
import threading
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from conftest import require_tool
from processes import free_port

from blipexp import cli, sweep, tracking
from blipexp.cli import run as runner
from blipexp.experiment import catalog
from blipexp.sweep import recovery, study as sweep_study

pytestmark = [pytest.mark.scaleout, pytest.mark.slow]

SWEEP_EXPERIMENTS = Path(__file__).parent / "experiments_sweep"
WORKER = Path(__file__).parent / "scaleout_worker.py"
TIMEOUT = 300  # seconds for any one process or wait


def postgres_bin(name: str) -> str:
    """PostgreSQL's `name` from PATH or Debian's versioned folders (newest first); skips (fails under CI) without it."""
    return require_tool(name, "install the PostgreSQL server (Debian: apt-get install postgresql)",
                        also=sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True))


def as_postgres_user(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as `nobody` then."""
    return ["runuser", "-u", "nobody", "--", *command] if os.geteuid() == 0 else command


def load_study(storage: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name="small_sweep-tiny", storage=storage)
    except KeyError:  # not created yet
        return None


def victim(storage: str, hosts: list[str]) -> str | None:
    """A worker in the middle of its first trial (its MLflow run started, nothing finished yet): its host."""
    study = load_study(storage)
    if study is None:
        return None
    finished = {t.user_attrs.get("host") for t in study.trials if t.state.is_finished()}
    for trial in study.trials:
        host = trial.user_attrs.get("host")
        started = trial.state.name == "RUNNING" and "mlflow_run_id" in trial.user_attrs
        if started and host in hosts and host not in finished:
            return host
    return None


def kill_one_mid_trial(workers: dict[str, subprocess.Popen], storage: str):
    """SIGKILL a worker in the middle of its first trial, let the others finish (each must exit 0): the killed
    trial and the others' (stdout, stderr) by host."""
    deadline = time.monotonic() + TIMEOUT
    while (killed_host := victim(storage, list(workers))) is None:
        ended = {h: w.returncode for h, w in workers.items() if w.poll() is not None}
        assert not ended, f"a worker ended before any was killed: {ended}\n{_stderr(workers, ended)}"
        assert time.monotonic() < deadline, "timed out waiting for a worker in the middle of a trial"
        time.sleep(0.3)
    killed = next(t for t in load_study(storage).trials
                  if t.state.name == "RUNNING" and t.user_attrs.get("host") == killed_host)
    workers[killed_host].kill()  # SIGKILL: no clean-up; only its heartbeat stops
    workers[killed_host].communicate()

    outputs = {h: w.communicate(timeout=TIMEOUT) for h, w in workers.items() if h != killed_host}
    for host, (out, err) in outputs.items():
        assert workers[host].returncode == 0, f"{host}:\n{out[-2000:]}\n{err[-3000:]}"
    return killed, outputs


def check_shared_sweep(study: optuna.Study, killed, total: int, hosts: list[str], client: mlflow.MlflowClient,
                       outputs: dict, artifacts: Path, homes: Path) -> None:
    """The workers' guarantees: exactly `total` finished trials in one study, the killed trial failed and its
    params retried, one sweep run, no run left RUNNING, one registered version (the best trial's, in the server's
    artifact store, not on a worker's disk), registered by the worker that trained it."""
    states = [t.state.name for t in study.trials]
    assert sum(s in ("COMPLETE", "PRUNED") for s in states) == total, states  # the total, exactly
    assert "RUNNING" not in states and "WAITING" not in states, states
    failed = study.trials[killed.number]
    assert failed.state.name == "FAIL"
    assert any(t.params == failed.params and t.number > failed.number and t.state.is_finished()
               and t.state.name != "FAIL" for t in study.trials), "the killed trial's params were retried"
    assert len({t.user_attrs["host"] for t in study.trials}) == len(hosts), "every machine ran trials"

    experiment = client.get_experiment_by_name("small_sweep")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == [], "no run stays RUNNING"
    sweeps = [r for r in runs if r.data.tags.get("blipexp.role") == "sweep"]
    assert len(sweeps) == 1 and sweeps[0].info.run_id == study.user_attrs["mlflow_parent_run_id"]
    killed_run = client.get_run(failed.user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "KILLED" and killed_run.data.tags["trial_state"] == "FAIL"
    assert killed_run.data.tags["fail_reason"] == "its worker stopped (no heartbeat)"

    versions = client.search_model_versions("name='small-sweep'")
    assert len(versions) == 1, [(v.version, v.run_id) for v in versions]
    assert versions[0].run_id == study.best_trial.user_attrs["mlflow_run_id"]
    assert versions[0].tags["sweep_run_id"] == study.user_attrs["mlflow_parent_run_id"]
    assert list(artifacts.rglob("model.safetensors")), "the model went to the server's artifact store"
    assert not list(homes.glob("*/artifacts/**/model.safetensors")), "not to a worker's disk"
    registrar = study.best_trial.user_attrs["host"]
    assert "registered  small-sweep version 1" in outputs[registrar][0]


def _stderr(workers: dict, hosts) -> str:
    return "\n".join(f"{h}: {workers[h].communicate()[1][-2000:]}" for h in hosts)


def test_a_storage_url_that_cannot_be_opened_stops_before_training(tmp_path, capsys):
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/optuna"  # nothing listens there
    args = ["run", "small_sweep", "--experiments", str(SWEEP_EXPERIMENTS), "--home", str(tmp_path / "home")]
    assert cli.main([*args, "--storage", closed]) == 2
    err = capsys.readouterr().err
    assert f"Optuna storage {closed} cannot be opened" in err and "--storage" in err
    assert not (tmp_path / "home" / "data").exists(), "stopped before making data"

    assert cli.main([*args, "--storage", "not a url"]) == 2
    assert "is not a database URL" in capsys.readouterr().err


# --- without PostgreSQL: Optuna's heartbeats on a SQLite file


def sqlite_study(tmp_path, monkeypatch, heartbeat_s: int = 1) -> tuple[str, optuna.Study]:
    monkeypatch.setenv(sweep_study.HEARTBEAT_ENV, str(heartbeat_s))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    return url, optuna.create_study(study_name="s", storage=sweep_study.rdb_storage(url))


def test_the_optuna_internals_we_rely_on_are_still_there(tmp_path, monkeypatch):
    """storage_of() is blipexp's one use of Optuna's private attributes: a new Optuna that renames them fails here."""
    monkeypatch.delenv(sweep_study.HEARTBEAT_ENV, raising=False)
    storage = sweep_study.rdb_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    assert sweep_study.storage_of(study) is storage, "Optuna wraps an RDBStorage in its cache: unwrapped"
    journal = sweep.open_study(catalog.load("small_sweep", SWEEP_EXPERIMENTS), tmp_path / "home")
    assert isinstance(sweep_study.storage_of(journal), optuna.storages.JournalStorage)
    trial = recovery.ask(study)
    assert sweep_study.storage_of(study).get_trial(sweep_study.trial_id(study, trial.number)).number == trial.number
    assert sweep_study.heartbeat_interval(study) == sweep_study.HEARTBEAT_SECONDS
    assert sweep_study.heartbeat_interval(journal) is None


def test_a_silent_trial_is_failed_and_its_params_retried(tmp_path, monkeypatch):
    url, study = sqlite_study(tmp_path, monkeypatch)
    silent, alive = recovery.ask(study), recovery.ask(study)  # ask records a first heartbeat
    silent.suggest_float("x", 0, 1)
    time.sleep(sweep_study.GRACE_HEARTBEATS + 1)  # the grace period of 1 s heartbeats, and one more
    sweep_study.storage_of(study).record_heartbeat(sweep_study.trial_id(study, alive.number))
    assert recovery.fail_stale_trials(study) == 1
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "RUNNING", "WAITING"], states
    assert study.trials[2].system_attrs["fixed_params"] == silent.params
    assert recovery.fail_reason(study.trials[0]) == recovery.STALE_REASON


def test_the_heartbeat_notices_a_trial_failed_behind_its_back(tmp_path, monkeypatch):
    url, study = sqlite_study(tmp_path, monkeypatch)
    trial = recovery.ask(study)
    with recovery.heartbeat(study, trial) as pulse:
        pulse.check()  # still running: goes on
        load_study_named(url, "s").tell(trial.number, state=optuna.trial.TrialState.FAIL)  # another handle
        deadline = time.monotonic() + 30
        while not pulse.lost.is_set() and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(recovery.TrialLost, match="grace period"):
            pulse.check()


def load_study_named(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url))


def test_a_live_worker_whose_trial_was_failed_behind_its_back_stops_it_and_goes_on(tmp_path, monkeypatch, home):
    """E.g. its database was unreachable for longer than the grace period: another worker failed its trial."""
    url, _ = sqlite_study(tmp_path, monkeypatch)
    spec = catalog.load("small_sweep", SWEEP_EXPERIMENTS).replace(n_trials=2, epochs=2, prune=False, test_fraction=0,
                                                                  max_new_tokens=6, pitch_scenes=30)
    lost = {}

    def other_worker() -> None:  # fails trial 0 once it is training, as fail_stale_trials would, and retries it
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and not lost:
            study = load_study(url)
            trial = study.trials[0] if study is not None and study.trials else None
            if trial is not None and trial.state.name == "RUNNING" and "mlflow_run_id" in trial.user_attrs:
                study.tell(0, state=optuna.trial.TrialState.FAIL)
                sweep.retry(study, trial.params)
                lost.update(trial.user_attrs)
            time.sleep(0.2)

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert runner.run_experiment(spec, home, storage=url) == 0
    finally:
        thread.join()

    study = load_study(url)
    assert lost, "trial 0 was never failed behind the worker's back"
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE"], "it went on to the total"
    assert study.trials[1].params == study.trials[0].params, "the lost trial's params ran again"
    assert "model_dir" not in study.trials[0].user_attrs
    tracking.configure(home)
    run = mlflow.get_run(lost["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["trial_state"] == "FAIL"
    assert run.data.tags["fail_reason"] == recovery.LOST_REASON
    assert not (home / "checkpoints" / run.info.run_id).exists(), "no checkpoint or model kept from it"
    versions = mlflow.MlflowClient().search_model_versions("name='small-sweep'")
    assert [v.run_id for v in versions] == [study.best_trial.user_attrs["mlflow_run_id"]]
