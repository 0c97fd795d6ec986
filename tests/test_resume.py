"""Resuming an interrupted single run for real: `python -m blipexp run` on the tiny model, SIGKILLed mid-epoch
after its first epoch checkpoint (a real subprocess), or stopped by Ctrl-C after its training ended (in its final
scoring, in logging its model: SIGINT to the command run in this process), then the same command again continues
the same MLflow run and ends where an uninterrupted run ends. A real MLflow store in temp dirs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fault_hooks
import mlflow
import pytest
from conftest import EXPERIMENTS
from processes import child_env

from blipexp import cli, tracking
from blipexp.data import load_data
from blipexp.runtime import interrupts
from blipexp.training import resume

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop

HOOKS = Path(__file__).parent / "fault_hooks.py"
TIMEOUT = 300
# few images, epochs and tokens, no test split: two short epochs of two steps (a kill lands mid-epoch 2, after
# epoch 1's checkpoint)
SMALL = {"pitch_scenes": 40, "epochs": 2, "test_fraction": 0, "max_new_tokens": 6, "sample_captions": 0,
         "train_batch_size": 16}


def run_args(home: Path, *extra: str) -> list[str]:
    small = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]
    return ["run", "football_baseline", "--tiny", "--home", str(home), "--experiments", str(EXPERIMENTS), *small,
            *extra]


def wait_for(marker: Path, process: subprocess.Popen, what: str, err: Path) -> None:
    """Until the fault hook has created `marker`; fails with the process's stderr if it ends first."""
    deadline = time.monotonic() + TIMEOUT
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before {what}:\n{err.read_text()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def kill_mid_epoch_2(args: list[str], tmp_path: Path) -> None:
    """Start the run with the fault hook stalling it in epoch 2 (epoch 1's checkpoint written), then SIGKILL it."""
    marker, err = tmp_path / "stalled", tmp_path / "stalled.err"
    marker.unlink(missing_ok=True)
    with err.open("w") as stderr:
        process = subprocess.Popen([sys.executable, str(HOOKS), "train:1", str(marker), *args], env=child_env(),
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        wait_for(marker, process, "epoch 2", err)
        process.kill()
        process.wait()


def runs(home: Path) -> list:
    tracking.configure(home)
    return mlflow.search_runs(experiment_names=["football_baseline"], output_format="list",
                              order_by=["attributes.start_time ASC"])


def history(run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in mlflow.MlflowClient().get_metric_history(run_id, key))


def rows(run_id: str, table: str) -> int:
    return len(next(iter(tracking.Run(run_id).table_columns(table).values())))


def versions() -> list:
    return mlflow.MlflowClient().search_model_versions("name='blip-football-tiny'")


def final_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items()
            if k.startswith(("best_val_", "untrained_val_")) or k in ("objective", "best_epoch", "train_steps")}


@pytest.fixture(scope="module")
def uninterrupted(new_home) -> dict:
    """The same spec trained without interruption in another home: the metrics a resumed run must end with."""
    home = new_home("uninterrupted")
    assert cli.main(run_args(home)) == 0
    (run,) = runs(home)
    return {"metrics": run.data.metrics, "val_cider": history(run.info.run_id, "val_cider"),
            "train_loss": history(run.info.run_id, "train_loss"),
            "rows": rows(run.info.run_id, "per_image/validation.json")}


def test_a_killed_run_resumes_in_the_same_mlflow_run_and_ends_as_an_uninterrupted_one(home, tmp_path, capsys,
                                                                                      uninterrupted):
    args = run_args(home)
    kill_mid_epoch_2(args, tmp_path)
    (killed,) = runs(home)
    run_id = killed.info.run_id
    assert killed.info.status == "RUNNING", "SIGKILL leaves the run RUNNING"
    assert [step for step, _ in history(run_id, "val_cider")] == [0, 1]

    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"resuming run {run_id} from epoch 1 (its last checkpoint; --new starts afresh)" in out.splitlines()
    (resumed,) = runs(home)
    assert resumed.info.run_id == run_id and resumed.info.status == "FINISHED"
    for key in ("val_cider", "train_loss"):  # every epoch and step logged once, with the uninterrupted values
        steps, values = zip(*history(run_id, key))
        expected_steps, expected_values = zip(*uninterrupted[key])
        assert steps == expected_steps and values == pytest.approx(expected_values, abs=1e-6), key
    final = final_metrics(uninterrupted["metrics"])
    assert {k: resumed.data.metrics[k] for k in final} == pytest.approx(final, abs=1e-6)
    assert [v.run_id for v in versions()] == [run_id], "registered once, from the resumed run"
    assert not list((home / "checkpoints" / run_id).glob("checkpoint-*")), "its checkpoints are dropped at the end"


def test_new_starts_afresh_and_a_differing_spec_is_not_resumed(home, tmp_path, capsys):
    args = run_args(home)
    kill_mid_epoch_2(args, tmp_path)
    (killed,) = runs(home)
    spec = cli.resolve_spec(cli.build_parser().parse_args(args))  # as the command resolves it
    fingerprint = load_data(spec, home).fingerprint
    assert resume.plan(spec, fingerprint, home, new=False, echo=False).point.run_id == killed.info.run_id

    differing = resume.plan(spec.replace(learning_rate=1e-3), fingerprint, home, new=False)
    assert differing.point is None
    assert capsys.readouterr().out.splitlines() == [
        f"interrupted run {killed.info.run_id} of 'football_baseline' is not resumed: its spec differs in "
        "learning_rate; starting a new run"]

    assert cli.main([*args, "--new"]) == 0
    first, second = runs(home)
    assert first.info.run_id == killed.info.run_id and first.info.status == "KILLED"
    assert second.info.status == "FINISHED"
    assert not (home / "checkpoints" / killed.info.run_id).exists(), "--new deletes the checkpoints it abandons"
    assert resume.plan(spec, fingerprint, home, new=False, echo=False).point is None, "nothing left to resume"


def stopped_at(point: str, args: list[str], monkeypatch, capsys) -> str:
    """The command run in this process with Ctrl-C pressed at `point`, as a terminal sends it (SIGINT to this
    process): "score" at the first split the saved model scores (scoring then goes on, to stop at its first batch),
    "log_model" once the model's folder is logged for registration (no safe point there: the grace ends inside).
    It must end as a Ctrl-C does; what it printed. The points are fault_hooks.py's stop:score and stop:log_model,
    pressed here from within instead of by a signal from another process."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    from blipexp.training import train

    def ctrl_c() -> None:
        os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as patch:
        if point == "score":
            original, calls = train.score_split, []

            def score_split(*a, **k):
                calls.append(a)
                if len(calls) == 1:
                    ctrl_c()
                return original(*a, **k)

            patch.setattr(train, "score_split", score_split)
        else:
            def stop_here(folder: Path) -> None:
                ctrl_c()
                fault_hooks.wait_until(lambda: False)  # until the grace ends and raises the stop here

            # fault_hooks patches the class itself: set here first, so that the patch is undone afterwards
            patch.setattr(LocalArtifactRepository, "log_artifacts", LocalArtifactRepository.log_artifacts)
            fault_hooks.after_model_logged(stop_here)
            patch.setenv(interrupts.GRACE_ENV, "0.2")
        capsys.readouterr()
        assert cli.main(args) == 128 + signal.SIGINT
    return capsys.readouterr().out


def test_a_run_stopped_after_its_training_is_finished_from_its_saved_model_without_training_again(
        home, tmp_path, capsys, monkeypatch, uninterrupted):
    """Ctrl-C lands in the final scoring; the same command then goes on from the saved best model and is stopped
    again while logging it for registration; the same command again registers it. No training after the first
    run, and the run ends as an uninterrupted one: the weights it trained, its metrics, one version, each
    per-image row logged once."""
    from blipexp.scoring import eval_cache
    from blipexp.training import train

    args = run_args(home)
    stopped_at("score", args, monkeypatch, capsys)
    (stopped,) = runs(home)
    run_id = stopped.info.run_id
    assert stopped.info.status == "KILLED" and "objective" not in stopped.data.metrics
    folder = home / "checkpoints" / run_id
    assert not list(folder.glob("checkpoint-*")), "the saved best model is all a resumed run needs: the epochs' go"
    weights = eval_cache.weights_digest(folder / "model")
    resuming = (f"resuming run {run_id} after its training ended: its saved best model is scored, logged and "
                "registered (--new starts afresh)")

    out = stopped_at("log_model", args, monkeypatch, capsys)
    assert resuming in out.splitlines()
    epoch_lines = [line for line in out.splitlines() if " val " in line]  # '  epoch 1/2        val cider ...'
    assert epoch_lines == [], "no epoch trained or evaluated again"
    (stopped,) = runs(home)
    assert stopped.info.status == "KILLED" and "objective" in stopped.data.metrics, "scored and logged"
    assert versions() == [], "stopped while logging the model: not registered"

    scored = []
    monkeypatch.setattr(train, "score_split", lambda *a, **k: scored.append(a))
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert resuming in out.splitlines() and not [line for line in out.splitlines() if " val " in line]
    assert scored == [], "the scores made before the stop are read back, not made again"
    (finished,) = runs(home)
    assert finished.info.run_id == run_id and finished.info.status == "FINISHED"
    steps = [step for step, _ in history(run_id, "train_loss")]
    assert steps == [step for step, _ in uninterrupted["train_loss"]], "each training step logged once: no more"
    final = final_metrics(uninterrupted["metrics"])
    assert {k: finished.data.metrics[k] for k in final} == pytest.approx(final, abs=1e-6)
    (version,) = versions()
    assert (version.run_id, version.tags["weights_digest"]) == (run_id, weights), "the weights trained the first time"
    assert rows(run_id, "per_image/validation.json") == uninterrupted["rows"], "each image's row logged once"
    assert not list(folder.glob("checkpoint-*")), "nothing trained again"
