"""Ctrl-C and SIGTERM stop at safe points: real signals sent to this process, a real Trainer on the tiny model, a
real sweep (Optuna journal, MLflow store in a temp dir)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
import torch
from conftest import EXPERIMENTS
from processes import child_env
from transformers import TrainerCallback

from blipexp import cli, tracking
from blipexp.cli import run as runner
from blipexp.data import load_data
from blipexp.experiment import catalog
from blipexp.experiment.spec import ExperimentSpec
from blipexp.runtime import interrupts
from blipexp.sweep import loop, open_study
from blipexp.training.train import train_trial

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop

SWEEPS = Path(__file__).parent / "experiments_sweep"
HOOKS = Path(__file__).parent / "fault_hooks.py"
BOUND_S = 60  # a wait that must end long before this


def send(signum: int = signal.SIGINT) -> None:
    os.kill(os.getpid(), signum)


def spin_until_raised(seconds: float = BOUND_S) -> None:
    """Busy code with no safe point: only the grace timer (or a second signal) can stop it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
    raise AssertionError(f"no stop came in {seconds} s")


def wait_for_the_grace_to_end() -> None:
    """Until the grace timer has fired, however long the machine takes: its handler has run when this returns."""
    deadline = time.monotonic() + BOUND_S
    while signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        assert time.monotonic() < deadline, f"the grace did not end in {BOUND_S} s"
        time.sleep(0.01)
    time.sleep(0)  # a line for the handler to run at, should the signal have come during the last check


@pytest.fixture
def short_grace(monkeypatch):
    monkeypatch.setenv(interrupts.GRACE_ENV, "0.3")


# --- the mechanism


def test_a_signal_stops_at_the_next_safe_point_not_where_it_lands():
    with interrupts.stop_at_safe_points():
        interrupts.check()  # nothing asked: a safe point passes
        send(signal.SIGTERM)
        reached = True  # the handler returned: the signal did not raise where it landed
        assert interrupts.requested()
        with pytest.raises(interrupts.Interrupted) as stopped:
            interrupts.check()
    assert reached and stopped.value.signum == signal.SIGTERM


def test_a_held_section_is_never_cut_and_an_overdue_stop_comes_at_its_end(short_grace):
    steps = []
    with interrupts.stop_at_safe_points(), pytest.raises(interrupts.Interrupted):
        with interrupts.held():
            send()
            interrupts.check()  # a safe point inside a held section does not stop it
            wait_for_the_grace_to_end()  # the stop is overdue
            steps.append("the section's last line")
        steps.append("after the section")
    assert steps == ["the section's last line"]


def test_with_no_safe_point_the_stop_comes_when_the_grace_is_over(short_grace):
    with interrupts.stop_at_safe_points(), pytest.raises(interrupts.Interrupted) as stopped:
        send(signal.SIGTERM)
        spin_until_raised()
    assert stopped.value.signum == signal.SIGTERM


def test_a_second_signal_stops_at_once_and_a_third_gets_the_default(monkeypatch):
    monkeypatch.setenv(interrupts.GRACE_ENV, str(BOUND_S * 2))  # the grace cannot be what stops it
    with interrupts.stop_at_safe_points():
        with pytest.raises(interrupts.Interrupted):
            send()
            send()
            spin_until_raised()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) == signal.default_int_handler


def test_handlers_are_restored_and_a_bad_grace_is_refused(monkeypatch):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    with interrupts.stop_at_safe_points():
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in before} == before
    assert not interrupts.requested()
    monkeypatch.setenv(interrupts.GRACE_ENV, "soon")
    with pytest.raises(ValueError, match="BLIPEXP_STOP_GRACE_S='soon' is not a number of seconds"):
        with interrupts.stop_at_safe_points():
            pass


class SignalledInWorker(torch.utils.data.Dataset):
    """Items 0..n-1 as (item, whether a stop was asked in the worker); fetching item `at` signals the worker as a
    signal to the whole process group reaches it: from another process than its parent (here itself)."""

    def __init__(self, n: int, at: int):
        self.n, self.at = n, at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item: int) -> tuple[int, bool]:
        if item == self.at:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
        return item, interrupts.requested()


def test_a_dataloader_worker_leaves_a_group_signal_to_its_parent_and_goes_on():
    """Ctrl-C in a terminal, `kill -- -PGID` or systemd reach every process of the group: a worker that stopped on
    it would die (torch's SIGTERM handler) or end quietly (Ctrl-C), and the parent's next batch would fail. A worker
    ignores it and serves every item; the parent, not asked, does not stop."""
    loader = torch.utils.data.DataLoader(SignalledInWorker(12, at=3), num_workers=2, batch_size=None,
                                         multiprocessing_context="fork")  # as torch starts workers on Linux
    with interrupts.stop_at_safe_points():
        served = list(loader)
        assert not interrupts.requested(), "the worker's signals were the worker's"
    assert sorted(item for item, _ in served) == list(range(12)), "no worker died: every item was served"
    assert not any(asked for _, asked in served), "no worker was asked to stop by its own signal"


def _wait_forever(ready) -> None:
    ready.set()
    threading.Event().wait()


def test_a_forked_child_still_ends_when_its_parent_terminates_it():
    """multiprocessing ends its workers with SIGTERM (Process.terminate, at exit): that signal, the parent's, ends a
    forked child at once and cleanly, where another process's is ignored."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    ready = context.Event()
    with interrupts.stop_at_safe_points():
        child = context.Process(target=_wait_forever, args=(ready,), daemon=True)
        child.start()
        try:
            assert ready.wait(BOUND_S)
            child.terminate()
            child.join(BOUND_S)
        finally:
            child.kill()  # one that outlived the test would hang this process's exit
    assert child.exitcode == 0, "ended by its parent's SIGTERM, as torch's handler ends a worker"


def test_a_group_sigterm_with_dataloader_workers_stops_the_run_at_its_steps_end(home, tmp_path):
    """SIGTERM to the run's whole process group (its DataLoader workers too) as step 2 begins: step 2 ends, the run
    stops there KILLED with the one-line notice, and no worker outlives it."""
    steps = tmp_path / "steps"
    command = [sys.executable, str(HOOKS), "group_sigterm:2", str(steps), "run", "football_baseline", "--tiny",
               "--home", str(home), "--experiments", str(EXPERIMENTS), "--set", "pitch_scenes=24", "--set", "epochs=2",
               "--set", "dataloader_workers=2", "--set", "test_fraction=0", "--set", "sample_captions=0"]
    with open(tmp_path / "stderr.txt", "w+") as stderr:  # a file: the progress bar could fill a pipe nobody reads
        process = subprocess.Popen(command, env=child_env(), stdout=subprocess.DEVNULL, stderr=stderr,
                                   start_new_session=True)  # a process group of its own, as a service has
        process.wait(timeout=300)
        stderr.seek(0)
        err = stderr.read()
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # nothing left in the group: the workers were ended with the run
    assert steps.read_text().split() == ["1", "2"], "the step the signal landed in ended; no other began"
    assert "Traceback" not in err and "DataLoader worker" not in err, err[-3000:]
    tracking.configure(home)
    (run,) = tracking.experiment_runs("football_baseline")
    assert run.info.status == "KILLED"
    assert [line for line in err.splitlines() if line.startswith("interrupted")] == [
        f"interrupted (SIGTERM): MLflow run {run.info.run_id} ended KILLED; re-run "
        f"`{cli.resume_command(command[4:])}` to resume it from its last epoch checkpoint (--new starts afresh)"]


# --- the safe points: a training step's end, between trials; the held section: a trial's end told to the study


class SignalAtStep(TrainerCallback):
    """Sends SIGINT as step `at` begins (a signal landing inside a training step); records steps begun and ended."""

    def __init__(self, at: int):
        self.at, self.begun, self.ended = at, [], []

    def on_step_begin(self, args, state, control, **kwargs):
        self.begun.append(state.global_step + 1)
        if state.global_step + 1 == self.at:
            send()

    def on_step_end(self, args, state, control, **kwargs):
        self.ended.append(state.global_step)


def test_training_stops_at_the_end_of_the_step_the_signal_landed_in(home):
    spec = ExperimentSpec().tiny().replace(epochs=2, sample_captions=0, test_fraction=0.0)
    tracking.configure(home)
    tracking.use_experiment("interrupts", home)
    steps = SignalAtStep(at=2)
    with interrupts.stop_at_safe_points(), pytest.raises(interrupts.Interrupted):
        train_trial(spec, load_data(spec, home), home, echo=False, callbacks=[steps])
    assert steps.begun == [1, 2] and steps.ended == [1, 2], "step 2 ran to its end, step 3 never began"
    (run,) = tracking.experiment_runs("interrupts")
    assert run.info.status == "KILLED"


def test_a_signal_while_a_trial_is_told_complete_keeps_it_complete_and_stops_before_the_next(home, monkeypatch):
    """The signal lands between the trial's run ending FINISHED and study.tell (the issue's example): the trial is
    told COMPLETE all the same, the sweep stops before asking for another trial, and re-running goes on from there."""
    spec = catalog.load("small_sweep", SWEEPS).replace(epochs=1, n_trials=2, test_fraction=0.0, max_new_tokens=6)
    original = loop._TrialRun.end_run

    def end_run(self, state, status):
        original(self, state, status)
        if state == "COMPLETE":
            send(signal.SIGTERM)
            wait_for_the_grace_to_end()  # the rest of the section takes longer than the grace: the stop falls due

    monkeypatch.setattr(loop._TrialRun, "end_run", end_run)
    monkeypatch.setenv(interrupts.GRACE_ENV, "0.2")  # overdue within the section, which holds it to its end
    tracking.configure(home)
    with interrupts.stop_at_safe_points(), pytest.raises(interrupts.Interrupted) as stopped:
        runner.run_experiment(spec, home)
    assert stopped.value.signum == signal.SIGTERM
    study = open_study(spec, home)
    assert [t.state.name for t in study.trials] == ["COMPLETE"], "told, and no second trial was started"
    run = mlflow.get_run(study.trials[0].user_attrs["mlflow_run_id"])
    assert (run.info.status, run.data.tags["trial_state"]) == ("FINISHED", "COMPLETE")
    assert mlflow.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "KILLED"

    monkeypatch.setattr(loop._TrialRun, "end_run", original)
    assert runner.run_experiment(spec, home) == 0
    study = open_study(spec, home)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"], "the kept trial counts: one more ran"
