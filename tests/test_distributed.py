"""One run across two processes: `accelerate launch` with DDP on CPU (gloo), the tiny model, a real MLflow store.

`accelerate launch --cpu` starts a single process unless MPI is set up; `--multi_gpu` picks torch's launcher
(torchrun), which starts the processes, and blipexp trains them with DDP on the CPU when there is no GPU.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from processes import child_env, free_port

from blipexp import tracking

pytestmark = [pytest.mark.scaleout, pytest.mark.slow]

SWEEP_EXPERIMENTS = Path(__file__).parent / "experiments_sweep"

ENV = child_env()


def test_two_processes_train_one_run_that_only_the_main_process_logs(home):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()),
               "-m", "blipexp", "run", "football_baseline", "--tiny", "--home", str(home),
               "--set", "epochs=1", "--set", "pitch_scenes=40", "--set", "sample_captions=1", "--set", "max_new_tokens=6"]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.count("registered  blip-football-tiny version 1") == 1, "one summary: the main process's"

    tracking.configure(home)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1, "the second rank created no run"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "2", "the Trainer ran DDP over both processes"
    pairs, batch = int(run.data.params["data_train_pairs"]), int(run.data.params["train_batch_size"])
    assert run.data.metrics["train_steps"] == math.ceil(pairs / (2 * batch)), "each rank took half of every epoch"
    assert {"objective", "best_val_cider", "untrained_val_cider", "train_loss", "test_cider"} <= set(run.data.metrics)
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_cider")
    assert sorted(m.step for m in history) == [0, 1], "each epoch logged once, not once per rank"

    versions = mlflow.MlflowClient().search_model_versions("name='blip-football-tiny'")
    assert [v.run_id for v in versions] == [run.info.run_id]
    assert [p.name for p in (home / "checkpoints").iterdir()] == [run.info.run_id], "both ranks used its folder"


def test_a_sweep_under_a_multi_process_launcher_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    from blipexp import cli

    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun / accelerate launch set it
    args = ["run", "small_sweep", "--experiments", str(SWEEP_EXPERIMENTS), "--home", str(tmp_path / "home")]
    assert cli.main(args) == 2
    assert "a sweep cannot run under `accelerate launch`" in capsys.readouterr().err
    assert not (tmp_path / "home").exists(), "refused before touching the store or data"


def _rank(rank: int, port: int, stopped) -> None:
    """One of two gloo ranks stepping through the Trainer's safe point; only rank 0 is signalled, at step 3."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from blipexp.runtime import interrupts
    from blipexp.training.trainer import StopAtSafePoints

    safe_point = StopAtSafePoints()
    with interrupts.stop_at_safe_points():
        try:
            for step in range(1, 21):
                if rank == 0 and step == 3:  # one rank signalled mid-step, as a launcher's forwarded signal can be
                    os.kill(os.getpid(), signal.SIGTERM)
                safe_point.on_step_end(None, None, None)
        except interrupts.Interrupted as stop:
            stopped.put((rank, step, stop.signum))
            return
    stopped.put((rank, "never stopped", None))


def test_ranks_stop_at_the_same_safe_point_when_one_is_signalled():
    """A rank that stopped a step before the other would leave it waiting forever in the next step's all-reduce:
    at each safe point the ranks combine what they were asked, and all stop at the step one was signalled in."""
    # a fresh process per rank, as a launcher starts them: forked from a new server process (not from this one) that
    # imported the rank's modules once, not once per rank as "spawn" does (~8 s of CPU each)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, "blipexp.training.trainer"])
    stopped, port = context.Queue(), free_port()
    ranks = [context.Process(target=_rank, args=(rank, port, stopped)) for rank in (0, 1)]
    for process in ranks:
        process.start()
    results = sorted(stopped.get(timeout=300) for _ in ranks)
    for process in ranks:
        process.join(60)
    assert results == [(0, 3, signal.SIGTERM), (1, 3, signal.SIGTERM)], "both at step 3, with rank 0's signal"
    assert [process.exitcode for process in ranks] == [0, 0]
