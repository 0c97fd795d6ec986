"""Run `python -m blipexp ...` with a fault hook, so a test can SIGKILL it in the middle of a write.

    python tests/fault_hooks.py POINT MARKER blipexp-args...

POINT says which write stalls half-done: `save:N` (the Nth `Trainer._save`: checkpoint-* folders, then the
trial's model folder) or `log_model` (the artifacts of the model being logged for registration). At that
point the hook truncates the biggest file just written to half its size (a half-written file), creates the
file MARKER and sleeps: the test waits for MARKER and kills the process. `train:E` stalls training itself,
mid-epoch: at a training step once more than E epochs are done (E epoch checkpoints written).
`group_sigterm:S` does not stall: as training step S begins it has another process send SIGTERM to the whole
process group (DataLoader workers too), as `kill -- -PGID` or systemd do; it appends each step begun to MARKER.
`stop:score` and `stop:log_model` wait for the test's Ctrl-C instead: the hook creates MARKER at the first split
the saved model scores (scoring then goes on once the signal has come, to stop at its first batch) or once the
model's folder is logged for registration (there it waits on: logging a model has no safe point, so the grace
ends inside). `promote:read` does not stall: a promote creates MARKER once it has read the alias's holder, just
before it takes the promote lock. The product code has no test hooks; only this wrapper patches it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def stall(folder: Path, marker: Path) -> None:
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    biggest = max(files, key=lambda p: p.stat().st_size)
    with open(biggest, "r+b") as handle:
        handle.truncate(biggest.stat().st_size // 2)
    marker.write_text(str(biggest))
    time.sleep(3600)


def wait_until(condition) -> None:
    deadline = time.monotonic() + 3600
    while not condition():
        assert time.monotonic() < deadline, "no stop came"
        time.sleep(0.01)


def hook_save(n: int, marker: Path) -> None:
    from transformers import Trainer

    original, calls = Trainer._save, []

    def _save(self, output_dir=None, state_dict=None):
        original(self, output_dir, state_dict)
        calls.append(output_dir)
        if len(calls) == n:
            stall(Path(output_dir), marker)

    Trainer._save = _save


def hook_train(epochs: float, marker: Path) -> None:
    from transformers import Trainer

    original = Trainer.training_step

    def training_step(self, *args, **kwargs):
        if self.state.epoch > epochs:
            marker.write_text(str(self.state.global_step))
            time.sleep(3600)
        return original(self, *args, **kwargs)

    Trainer.training_step = training_step


def hook_group_sigterm(step: int, marker: Path) -> None:
    from transformers import Trainer

    original = Trainer.training_step

    def training_step(self, *args, **kwargs):
        begun = self.state.global_step + 1
        with marker.open("a") as steps:
            steps.write(f"{begun}\n")
        if begun == step:  # sent by another process, as a shell's or systemd's is (a worker tells its parent's apart)
            subprocess.run([sys.executable, "-c", f"import os, signal; os.killpg({os.getpgrp()}, signal.SIGTERM)"])
        return original(self, *args, **kwargs)

    Trainer.training_step = training_step


def after_model_logged(then) -> None:
    """Patch MLflow's local artifact store: `then(folder)` once a model folder is logged, with the folder it went to."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    original = LocalArtifactRepository.log_artifacts

    def log_artifacts(self, local_dir, artifact_path=None):
        original(self, local_dir, artifact_path)
        if any(Path(local_dir).rglob("*.safetensors")):  # the model folder, not a plot or a table
            then(Path(self.artifact_dir) / (artifact_path or ""))

    LocalArtifactRepository.log_artifacts = log_artifacts


def hook_log_model(marker: Path) -> None:
    after_model_logged(lambda folder: stall(folder, marker))


def hook_stop_in_scoring(marker: Path) -> None:
    from blipexp.runtime import interrupts
    from blipexp.training import train

    original, calls = train.score_split, []

    def score_split(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:  # the first split the saved model scores
            marker.write_text("scoring")
            wait_until(interrupts.requested)
        return original(*args, **kwargs)

    train.score_split = score_split


def hook_stop_in_log_model(marker: Path) -> None:
    def stop_here(folder: Path) -> None:
        marker.write_text("logging the model")
        wait_until(lambda: False)  # until the grace after the signal ends and raises the stop here

    after_model_logged(stop_here)


def hook_promote_read(marker: Path) -> None:
    from blipexp.registry import promotion

    original = promotion._promote_lock

    def _promote_lock():
        marker.write_text("read the holder")  # the holder it will check again under the lock
        return original()

    promotion._promote_lock = _promote_lock


def main() -> int:
    point, marker, argv = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    if point.startswith("save:"):
        hook_save(int(point.split(":")[1]), marker)
    elif point.startswith("train:"):
        hook_train(float(point.split(":")[1]), marker)
    elif point.startswith("group_sigterm:"):
        hook_group_sigterm(int(point.split(":")[1]), marker)
    elif point == "log_model":
        hook_log_model(marker)
    elif point == "stop:score":
        hook_stop_in_scoring(marker)
    elif point == "stop:log_model":
        hook_stop_in_log_model(marker)
    elif point == "promote:read":
        hook_promote_read(marker)
    else:
        raise SystemExit(f"unknown fault point {point!r}")
    from blipexp.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    from blipexp.runtime.exiting import exit_now

    exit_now(main())  # as `python -m blipexp` ends
