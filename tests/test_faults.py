"""Faults injected for real on the tiny model: SIGKILL at random points and inside half-done writes, SIGINT and
SIGTERM, parallel workers on one study, a NaN objective. Real subprocesses, a real Optuna journal, a real
MLflow store in a temp dir. After each fault the same command is run again and must finish the sweep with
nothing lost, nothing half-written used, and Optuna and MLflow agreeing on every trial.
"""
from __future__ import annotations

import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from PIL import Image

from blipexp import cli, tracking
from blipexp.cli import run as runner
from blipexp.experiment import catalog
from blipexp.sweep import FINAL_STATES, open_study, optuna_storage, study_name

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop

SWEEP_EXPERIMENTS = Path(__file__).parent / "experiments_sweep"
HOOKS = Path(__file__).parent / "fault_hooks.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
TIMEOUT = 300  # seconds for any one process or wait; a tiny trial takes a few


FAST = {"test_fraction": 0, "max_new_tokens": 6, "pitch_scenes": 30}  # no test split, short captions, 30 scenes:
# evaluation costs most here, and what these tests check does not grow with the data


def sweep_args(home: Path, *extra: str) -> list[str]:
    fast = [arg for key, value in FAST.items() for arg in ("--set", f"{key}={value}")]
    return ["run", "small_sweep", "--home", str(home), "--experiments", str(SWEEP_EXPERIMENTS), *fast, *extra]


def blipexp(*args: str) -> list[str]:
    return [sys.executable, "-m", "blipexp", *args]


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)


def load_study(home: Path, name: str = "small_sweep-tiny") -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=optuna_storage(home))
    except KeyError:  # not created yet
        return None


def wait_for(condition, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the process ended before {what}:\n{process.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def running_trial(home: Path, with_run: bool = False) -> optuna.trial.FrozenTrial | None:
    study = load_study(home)
    running = [t for t in study.trials if t.state.name == "RUNNING"] if study else []
    if with_run:
        running = [t for t in running if "mlflow_run_id" in t.user_attrs]
    return running[-1] if running else None


def trial_runs(home: Path) -> list:
    tracking.configure(home)
    return [r for r in mlflow.search_runs(experiment_names=["small_sweep"], output_format="list")
            if "optuna_trial" in r.data.tags]


def check_agreement(home: Path, study: optuna.Study) -> None:
    """MLflow and Optuna agree: a finished trial has one FINISHED run tagged with its state; a failed one at most
    one run, KILLED or FAILED; no run is left RUNNING; every trial run hangs under the one sweep run."""
    runs = trial_runs(home)
    parent = study.user_attrs["mlflow_parent_run_id"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in runs)
    assert not [r.info.run_id for r in mlflow.search_runs(experiment_names=["small_sweep"], output_format="list")
                if r.info.status == "RUNNING"], "a run was left RUNNING"
    for trial in study.trials:
        mine = [r for r in runs if r.data.tags["optuna_trial"] == str(trial.number)]
        if trial.state in FINAL_STATES:
            assert len(mine) == 1 and mine[0].info.run_id == trial.user_attrs["mlflow_run_id"], trial.number
            assert mine[0].data.tags["trial_state"] == trial.state.name and mine[0].info.status == "FINISHED"
        else:
            assert trial.state.name in ("FAIL", "WAITING"), (trial.number, trial.state)
            assert len(mine) <= 1
            assert all(r.info.status in ("KILLED", "FAILED") and r.data.tags["trial_state"] == "FAIL" for r in mine)


def check_retried(study: optuna.Study, failed: optuna.trial.FrozenTrial) -> None:
    later = [t for t in study.trials if t.number > failed.number and t.state in FINAL_STATES]
    assert any(t.params == failed.params for t in later), f"params {failed.params} of trial {failed.number} not retried"


def check_one_loadable_version(home: Path, study: optuna.Study, tmp_path: Path) -> None:
    tracking.configure(home)
    versions = mlflow.MlflowClient().search_model_versions("name='small-sweep'")
    assert len(versions) == 1
    assert versions[0].run_id == study.best_trial.user_attrs["mlflow_run_id"]
    assert versions[0].tags["sweep_run_id"] == study.user_attrs["mlflow_parent_run_id"]
    image = tmp_path / "scene.png"
    Image.new("RGB", (64, 64), (58, 150, 62)).save(image)
    model = mlflow.pyfunc.load_model(f"models:/small-sweep/{versions[0].version}")
    captions = model.predict(pd.DataFrame({"image": [image]}))["caption"]
    assert len(captions) == 1 and isinstance(captions[0], str)


# --- (1) SIGKILL at a random point of a trial


def test_resume_after_a_kill_at_a_random_point_of_a_trial(tmp_path, home, capsys):
    args = sweep_args(home, "--trials", "3", "--set", "epochs=2")
    process = start(blipexp(*args))
    wait_for(lambda: (s := load_study(home)) is not None and len(s.trials) >= 3
             and s.trials[1].state in FINAL_STATES, process, "the third trial")
    # Anywhere in the trial (building the model, training, evaluating, saving): a random share of trial 1's time,
    # which it repeats with another learning rate (trial 0 also evaluated the untrained model: it took longer),
    # counted from the trial's start, not from when this test noticed it
    # Seeded so that a failure replays: the seed is printed, and BLIPEXP_FAULT_SEED=<seed> repeats the point
    seed = int(os.environ.get("BLIPEXP_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"kill point seed: BLIPEXP_FAULT_SEED={seed}")
    study = load_study(home)
    share = random.Random(seed).uniform(0.02, 0.8)
    point = share * study.trials[1].user_attrs["seconds"]
    time.sleep(max(0.0, point - (datetime.now() - study.trials[2].datetime_start).total_seconds()))
    process.kill()
    process.communicate()
    before = load_study(home).trials
    killed = [t for t in before if t.state.name == "RUNNING"]
    assert len(killed) == 1, \
        f"killed {point:.1f}s into trial 2 (BLIPEXP_FAULT_SEED={seed}): {[t.state.name for t in before]}"

    assert cli.main(args) == 0  # the same command again, in this process: resumes
    assert "resume: 1 trial(s) left running by a stopped process marked failed" in capsys.readouterr().out
    study = load_study(home)
    for old in before:  # finished trials are kept as they were
        if old.state in FINAL_STATES:
            assert (study.trials[old.number].state, study.trials[old.number].value) == (old.state, old.value)
    assert study.trials[killed[0].number].state.name == "FAIL", \
        f"killed {point:.1f}s into the trial (BLIPEXP_FAULT_SEED={seed})"
    assert len(study.get_trials(states=FINAL_STATES)) == 3  # the total, not "3 more"
    check_retried(study, study.trials[killed[0].number])
    check_agreement(home, study)
    versions = mlflow.MlflowClient().search_model_versions("name='small-sweep'")
    assert len(versions) == 1 and versions[0].run_id == study.best_trial.user_attrs["mlflow_run_id"]


# --- (2) SIGKILL inside a half-done write: the trial's model folder, then the model logged for registration


def kill_inside(point: str, args: list[str], tmp_path: Path) -> Path:
    """Run with the fault hook at `point`; SIGKILL once it has half-written a file; return that file."""
    marker = tmp_path / f"stalled-{point.replace(':', '-')}"
    process = start([sys.executable, str(HOOKS), point, str(marker), *args])
    wait_for(marker.exists, process, f"the write at {point}")
    process.kill()
    process.communicate()
    return Path(marker.read_text())


def test_a_kill_inside_a_model_save_or_model_logging_is_never_used(tmp_path, home, capsys):
    args = sweep_args(home, "--trials", "2", "--set", "epochs=1")
    half_saved = kill_inside("save:2", args, tmp_path)  # trial 0's checkpoint-1, then its model folder: killed there
    killed_run = half_saved.parent.parent.name  # checkpoints/<run id>/model/model.safetensors
    assert half_saved.parent.name == "model" and half_saved.is_file()

    half_logged = kill_inside("log_model", args, tmp_path)  # resumes, finishes the trials, dies while logging
    study = load_study(home)
    assert study.trials[0].state.name == "FAIL" and len(study.get_trials(states=FINAL_STATES)) == 2
    assert not (home / "checkpoints" / killed_run).exists(), "the killed trial's half-saved folder is not reused"
    assert half_logged.is_file() and half_logged.suffix == ".safetensors"
    tracking.configure(home)
    assert mlflow.MlflowClient().search_model_versions("name='small-sweep'") == []

    assert cli.main(args) == 0  # registers the best trial's model again, this time whole
    assert "registered  small-sweep version 1" in capsys.readouterr().out
    study = load_study(home)
    assert study.best_trial.user_attrs["mlflow_run_id"] != killed_run
    check_retried(study, study.trials[0])
    check_agreement(home, study)
    check_one_loadable_version(home, study, tmp_path)
    assert [p.parent for p in (home / "checkpoints").glob("*/model")] == [home / "checkpoints" /
                                                                         study.best_trial.user_attrs["mlflow_run_id"]]


# --- (3) SIGTERM and Ctrl-C (SIGINT): the trial ends FAIL / KILLED, the sweep resumes with the printed command


def resume_command_in(stderr: str, signame: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(f"interrupted ({signame}): re-run `python -m blipexp run small_sweep "), lines[0]
    command = shlex.split(re.search(r"re-run `(.+?)` to resume", lines[0]).group(1))
    assert command[:3] == ["python", "-m", "blipexp"]
    return command[3:]


def check_interrupted(home: Path, trial: optuna.trial.FrozenTrial, signame: str) -> None:
    study = load_study(home)
    failed = study.trials[trial.number]
    assert failed.state.name == "FAIL" and failed.user_attrs["fail_reason"] == f"interrupted ({signame})"
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [failed.params], "its params wait to be retried"
    tracking.configure(home)
    run = mlflow.get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["trial_state"] == "FAIL"
    assert mlflow.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "KILLED"


def test_sigterm_and_ctrl_c_end_the_trial_cleanly_and_print_how_to_resume(tmp_path, home, capsys, monkeypatch):
    """Each signal arrives mid-epoch, at a point the test holds still: a trial of the small sweep lasts about a second
    on a fast CPU, so a signal timed by polling the study could land after the sweep has finished."""
    args = sweep_args(home, "--trials", "2", "--set", "epochs=2", "--new")
    marker = tmp_path / "training"
    process = start([sys.executable, str(HOOKS), "train:0", str(marker), *args])  # holds at epoch 1's second step
    wait_for(marker.exists, process, "a trial in its first epoch")
    trial = running_trial(home, with_run=True)
    assert trial is not None
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    check_interrupted(home, trial, "SIGTERM")
    resume = resume_command_in(stderr, "SIGTERM")
    assert "--new" not in resume and resume == [a for a in args if a != "--new"]

    from transformers import Trainer

    original, pressed = Trainer.training_step, []

    def training_step(self, *step_args, **kwargs):  # Ctrl-C in this process, as a terminal sends it, mid-epoch
        if not pressed:
            pressed.append(self.state.global_step)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *step_args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", training_step)
    assert cli.main(resume) == 128 + signal.SIGINT
    monkeypatch.undo()
    check_interrupted(home, load_study(home).get_trials(states=(optuna.trial.TrialState.FAIL,))[-1], "SIGINT")
    assert resume_command_in(capsys.readouterr().err, "SIGINT") == resume

    assert cli.main(resume) == 0
    study = load_study(home)
    assert len(study.get_trials(states=FINAL_STATES)) == 2
    for failed in study.get_trials(states=(optuna.trial.TrialState.FAIL,)):
        check_retried(study, failed)
    check_agreement(home, study)
    assert mlflow.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "FINISHED"


# --- (4) parallel workers on one study


def test_parallel_workers_share_one_sweep_exactly(tmp_path, home):
    args = sweep_args(home, "--trials", "3", "--set", "epochs=1")
    workers = [start(blipexp(*args)) for _ in range(2)]  # at once: they race to create the store, study and sweep run
    outputs = [worker.communicate(timeout=TIMEOUT) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
        assert "locked" not in err.lower(), err[-3000:]
        assert "registered  small-sweep version 1" in out, out[-2000:]  # every worker reports the one version

    study = load_study(home)
    assert [t.state in FINAL_STATES for t in study.trials] == [True] * 3, [t.state.name for t in study.trials]
    assert len({t.user_attrs["pid"] for t in study.trials}) >= 2, "the workers did share the trials"
    runs = trial_runs(home)
    assert sorted(int(r.data.tags["optuna_trial"]) for r in runs) == [0, 1, 2], "no trial ran twice"
    sweeps = [r for r in mlflow.search_runs(experiment_names=["small_sweep"], output_format="list")
              if r.data.tags.get("blipexp.role") == "sweep"]
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"
    check_agreement(home, study)
    check_one_loadable_version(home, study, tmp_path)


# --- (5) a NaN loss or objective


def test_a_nan_trial_fails_with_its_reason_and_the_sweep_goes_on(tmp_path, home, capsys):
    spec = catalog.load("nan_sweep", SWEEP_EXPERIMENTS).replace(**FAST)  # learning rate 1e30, no clipping: NaN
    tracking.configure(home)
    study = open_study(spec, home)
    for learning_rate in (1e30, 3e-3, 2e-3):
        study.enqueue_trial({"learning_rate": learning_rate})
    assert runner.run_experiment(spec, home) == 0
    assert "trial 0 failed: NonFiniteMetric" in capsys.readouterr().out

    study = load_study(home, study_name(spec))
    poisoned = study.trials[0]
    assert poisoned.state.name == "FAIL" and "NonFiniteMetric" in poisoned.user_attrs["fail_reason"]
    assert len(study.get_trials(states=FINAL_STATES)) == 2  # replaced: the sweep still reaches its total
    run = next(r for r in mlflow.search_runs(experiment_names=["nan_sweep"], output_format="list")
               if r.data.tags.get("optuna_trial") == "0")
    assert run.info.status == "FAILED" and run.data.tags["trial_state"] == "FAIL"
    assert run.data.tags["fail_reason"] == poisoned.user_attrs["fail_reason"]
    assert not (home / "checkpoints" / run.info.run_id).exists()
    versions = mlflow.MlflowClient().search_model_versions("name='nan-sweep'")
    assert [v.run_id for v in versions] == [study.best_trial.user_attrs["mlflow_run_id"]]
    assert run.info.run_id not in [v.run_id for v in versions]
