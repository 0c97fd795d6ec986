"""A trial's or run's process is named by host, pid and start time: a reused pid is another process."""
from __future__ import annotations

import subprocess
import sys

import optuna
import psutil
import pytest

from blipexp.runtime import liveness
from blipexp.sweep import recovery


def test_this_process_is_alive_and_an_ended_one_is_not():
    assert liveness.alive(liveness.this_process())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    recorded = {**liveness.this_process(), "pid": str(child.pid),
                "started": f"{psutil.Process(child.pid).create_time():.3f}" if child.poll() is None else "1.0"}
    child.wait()
    assert not liveness.alive(recorded)


def test_a_reused_pid_is_another_process():
    """After a container restart the host name and low pids come back: the pid alone would look alive."""
    reused = {**liveness.this_process(), "started": "1000.000"}  # this pid, but a process started long ago
    assert not liveness.alive(reused)
    assert liveness.alive({**reused, "started": ""}), "a record without a start time: the pid decides, as before"


def test_another_users_process_under_the_pid_is_not_our_worker(monkeypatch):
    def denied(pid):
        raise psutil.AccessDenied(pid)

    recorded = liveness.this_process()
    monkeypatch.setattr(liveness.psutil, "Process", denied)
    assert not liveness.alive(recorded), "os.kill(pid, 0) would say PermissionError: alive, forever"


def test_a_running_trial_whose_pid_was_reused_is_failed_and_its_params_retried():
    study = optuna.create_study(direction="maximize")
    trial = study.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-2)})
    for key, value in {**liveness.this_process(), "started": "1000.000"}.items():
        trial.set_user_attr(key, value)
    alive = study.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-2)})
    for key, value in liveness.this_process().items():
        alive.set_user_attr(key, value)
    assert recovery.fail_orphaned_trials(study) == 1
    states = {t.number: t.state for t in study.trials}
    assert states[trial.number] == optuna.trial.TrialState.FAIL
    assert states[alive.number] == optuna.trial.TrialState.RUNNING, "this process's own trial is left running"
    (waiting,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert waiting.system_attrs["fixed_params"] == trial.params


@pytest.mark.parametrize("host", ["another-machine"])
def test_only_this_hosts_processes_are_judged(host):
    assert not liveness.on_this_host({**liveness.this_process(), "host": host})


def test_an_interrupted_single_run_whose_pid_was_reused_counts_as_stopped():
    from types import SimpleNamespace

    from blipexp.training import resume

    def run(started: str):
        me = liveness.this_process()
        tags = {resume.HOST_TAG: me["host"], resume.PID_TAG: me["pid"], resume.STARTED_TAG: started}
        return SimpleNamespace(info=SimpleNamespace(status="RUNNING"), data=SimpleNamespace(tags=tags))

    assert resume._stopped(run("1000.000")), "a pid reused after a restart: the run's process is gone"
    assert not resume._stopped(run(liveness.this_process()["started"])), "this process still trains it"
    assert resume.Resumable("k").tags[resume.STARTED_TAG] == liveness.this_process()["started"]
