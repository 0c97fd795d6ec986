import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import mlflow
import optuna
import pytest
from conftest import EXPERIMENTS, REPO
from processes import child_env, free_port, wait_for_health

from blipexp import cli, tracking
from blipexp.experiment import catalog

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop

SWEEPS = REPO / "tests" / "experiments_sweep"


def run_cli(*argv):
    return cli.main(list(argv) + ["--experiments", str(EXPERIMENTS)])


def test_list_shows_each_experiment_with_its_hypothesis(capsys):
    assert run_cli("list") == 0
    out = capsys.readouterr().out
    assert "football_baseline" in out and "football_lr_sweep  [sweep]" in out
    assert catalog.load("football_baseline", EXPERIMENTS).hypothesis in out


def test_show_names_the_hypothesis_once(capsys):
    assert run_cli("show", "football_baseline") == 0
    out = capsys.readouterr().out
    assert "hypothesis: fine-tuning BLIP-base with the notebook's settings" in out
    assert "Hypothesis:" not in out


def test_show_applies_overrides_and_marks_them(capsys):
    assert run_cli("show", "football_baseline", "--set", "learning_rate=1e-5") == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if " learning_rate " in l)
    assert line.startswith("*") and "1e-05" in line


@pytest.mark.parametrize("argv, message", [
    (("show", "football_baseline", "--set", "learnin_rate=1"), "did you mean learning_rate"),
    (("show", "football_baseline", "--set", "epochs=x"), "cannot set epochs"),
    (("run", "no_such_experiment", "--tiny"), "no experiment 'no_such_experiment'"),
])
def test_bad_input_exits_2_with_one_clear_line(capsys, argv, message):
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_run_tiny_logs_one_run_and_prints_a_summary(capsys, home):
    (home / "mlflow.db").unlink()  # as on a user's first run: the run makes its store
    code = run_cli("run", "football_baseline", "--tiny", "--home", str(home),
                   "--set", "pitch_scenes=60", "--set", "epochs=1")
    assert code == 0
    out = capsys.readouterr().out
    assert "done: cider" in out and "run id" in out and "blipexp ui" in out
    tracking.configure(home)
    runs = mlflow.search_runs(experiment_names=["football_baseline"], output_format="list")
    assert len(runs) == 1 and runs[0].data.tags["profile"] == "tiny"
    assert runs[0].data.params["epochs"] == "1"  # --set wins over the tiny profile
    assert (home / "mlflow.db").is_file() and (home / "artifacts").is_dir()


def test_an_interrupted_single_run_ends_killed_and_says_so_in_one_line(home, capsys, monkeypatch):
    """SIGTERM, as `kill PID` sends it, once training has begun (to this process, running the command); Ctrl-C takes
    the same path: the cli raises Interrupted for SIGINT and SIGTERM. A child process's SIGTERM: test_faults.py."""
    from transformers import Trainer

    signum = signal.SIGTERM
    argv = ["run", "football_baseline", "--tiny", "--home", str(home), "--experiments", str(EXPERIMENTS),
            "--set", "pitch_scenes=30", "--set", "epochs=20"]
    original = Trainer.training_step

    def training_step(self, *args, **kwargs):
        os.kill(os.getpid(), signum)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", training_step)
    assert cli.main(argv) == 128 + signum
    monkeypatch.undo()
    err = capsys.readouterr().err
    tracking.configure(home)
    runs = mlflow.search_runs(experiment_names=["football_baseline"], output_format="list")
    assert [r.info.status for r in runs] == ["KILLED"]
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert lines == [f"interrupted ({signum.name}): MLflow run {runs[0].info.run_id} ended KILLED; re-run "
                     f"`{cli.resume_command(argv)}` to resume it from its last epoch checkpoint (--new starts "
                     "afresh)"]


def test_a_diverging_run_ends_failed_with_one_line_naming_the_step_and_the_fix(capsys, home):
    """--set learning_rate=1000: the training loss runs off within a few steps. The run stops at the step it turns
    non-finite, before that epoch's validation (the Trainer's logging_nan_inf_filter, off, would log it as a running
    mean and train on), ends FAILED with its fail_reason, and the command says what, where and the fix in one line,
    exit status 1."""
    code = run_cli("run", "football_baseline", "--tiny", "--home", str(home), "--set", "pitch_scenes=60",
                   "--set", "epochs=4", "--set", "learning_rate=1000", "--set", "test_fraction=0",
                   "--set", "sample_captions=0", "--set", "max_new_tokens=6")
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err[-3000:]
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    found = re.fullmatch(r"error: training loss is (nan|inf|-inf) at step (\d+) \(epoch (\d) of 4\): the training "
                         r"diverged; lower learning_rate \(now 1000\)", line)
    assert found, line
    step, epoch = int(found[2]), int(found[3])
    tracking.configure(home)
    (run,) = tracking.experiment_runs("football_baseline")
    assert run.info.status == "FAILED"
    assert run.data.tags["fail_reason"] == "NonFiniteMetric: " + line.removeprefix("error: ")
    record = tracking.Run(run.info.run_id)
    assert max(m.step for m in record.metric_history("val_cider")) == epoch - 1, "stopped before its validation"
    assert max(m.step for m in record.metric_history("train_loss")) < step, "the finite curve up to it is kept"


def test_run_without_the_hub_fails_fast_and_names_tiny(capsys, home):
    assert run_cli("run", "football_baseline", "--home", str(home)) == 2
    err = capsys.readouterr().err
    assert "--tiny" in err and "--set dataset=" in err


def test_sweep_registers_one_version_from_the_best_trial_then_promote_and_caption(capsys, home, tmp_path):
    from pathlib import Path

    import optuna
    from PIL import Image

    from blipexp.sweep import optuna_storage

    sweeps = str(Path(__file__).parent / "experiments_sweep")
    argv = ["run", "small_sweep", "--home", str(home), "--experiments", sweeps, "--trials", "3", "--set", "epochs=2",
            "--set", "confirm_seeds=1", "--set", "learning_rate=5e-4",  # no trial's rate: the spec's is not the best's
            "--set", "max_new_tokens=6"]  # short captions: the sweep's choice and records, not its scores
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert cli.main(argv) == 0  # a finished sweep run again: nothing new, nothing registered or confirmed again
    out = first + capsys.readouterr().out
    assert "registered  small-sweep version 1" in out and "promote" in out
    assert out.count("best vs runner-up on the validation images: ") == 2
    assert out.count("confirm: trial") == 1, "one more seed, trained once"

    client = mlflow.MlflowClient()
    versions = client.search_model_versions("name='small-sweep'")
    study = optuna.load_study(study_name="small_sweep-tiny", storage=optuna_storage(home))
    assert len(versions) == 1
    assert versions[0].run_id == study.best_trial.user_attrs["mlflow_run_id"]
    assert float(versions[0].tags["objective"]) == study.best_trial.value
    sweep_run = mlflow.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert sweep_run.data.tags["best_vs_runner_up"].startswith("best vs runner-up on the validation images: ")
    assert "runner_up_p_value" in sweep_run.data.metrics
    # confirm_seeds=1: the best trial's parameters once more, with a seed not its own; the chosen trial is not in the
    # mean (it was picked for being the best), but beside it
    confirmations = tracking.find_runs("tags.`blipexp.role` = 'confirm_seed'")
    assert len(confirmations) == 1 and confirmations[0].data.tags["mlflow.parentRunId"] == sweep_run.info.run_id
    confirmation, chosen = confirmations[0].data, mlflow.get_run(versions[0].run_id).data
    assert confirmation.params["learning_rate"] == chosen.params["learning_rate"] != "0.0005", "the best's parameters"
    assert confirmation.params["seed"] == str(int(chosen.params["seed"]) + 1), "a fresh seed"
    fresh, best = confirmation.metrics["objective"], study.best_trial.value
    assert sweep_run.data.metrics["confirm_objective_mean"] == fresh, "the fresh seed's alone"
    assert sweep_run.data.metrics["confirm_objective_chosen"] == best
    assert "confirm_objective_sd" not in sweep_run.data.metrics, "one fresh seed: no spread to give"
    assert versions[0].tags["seed_spread_objective"] == f"{fresh:.4f} over 1 fresh seed (the chosen trial: {best:.4f})"
    assert f"  objective   {versions[0].tags['seed_spread_objective']} (trial {study.best_trial.number}'s" in out
    assert not (home / "checkpoints" / confirmations[0].info.run_id).exists(), "its model is not kept"

    assert cli.main(["promote", "small-sweep", "--version", "1", "--home", str(home)]) == 0
    image = tmp_path / "scene.png"
    Image.new("RGB", (128, 128), (58, 150, 62)).save(image)
    assert cli.main(["caption", "models:/small-sweep@champion", str(image), "--home", str(home)]) == 0
    captioned = capsys.readouterr()
    assert "Loading weights" not in captioned.err, "a logged model's local folder loads without a bar (promote, caption)"
    assert cli.main(["models", "--home", str(home)]) == 0
    out = captioned.out + capsys.readouterr().out
    assert f"{image}\t" in out and "champion" in out
    assert cli.main(["promote", "small-sweep", "--version", "7", "--home", str(home)]) == 2


@pytest.mark.parametrize("storage", [["--storage", "postgresql://ana:SECRET@db.lab:5432/optuna"],
                                     ["--storage=postgresql://ana:SECRET@db.lab:5432/optuna"]])
def test_the_resume_command_never_repeats_a_storage_password(storage):
    command = cli.resume_command(["run", "small_sweep", "--new", *storage, "--trials", "4"])
    assert "SECRET" not in command
    run, _, hint = command.partition("  # ")
    assert run == "python -m blipexp run small_sweep --trials 4", "the storage comes from $BLIPEXP_STORAGE"
    assert hint.startswith("first: export BLIPEXP_STORAGE='postgresql://ana:***@db.lab:5432/optuna'")


def test_the_resume_command_never_repeats_a_tracking_uri_password():
    command = cli.resume_command(["run", "sweep", "--tracking-uri", "https://bob:SECRET@mlflow.lab:5000",
                                  "--storage=postgresql://ana:SECRET@db.lab/optuna", "--trials", "4"])
    assert command == ("python -m blipexp run sweep --trials 4  # first: export "
                       "MLFLOW_TRACKING_URI='https://bob:***@mlflow.lab:5000' "
                       "BLIPEXP_STORAGE='postgresql://ana:***@db.lab/optuna' with the real password for ***")


def test_the_resume_command_keeps_a_storage_without_password():
    command = cli.resume_command(["run", "small_sweep", "--storage=postgresql://ana@db.lab/optuna"])
    assert command == "python -m blipexp run small_sweep --storage postgresql://ana@db.lab/optuna"


def test_a_sweep_logs_no_storage_url_to_mlflow(home):
    """Not its URL, nor so any password in it: the sweep's and trials' params and tags name only the study."""
    from pathlib import Path

    storage = f"sqlite:///{home / 'study.db'}"  # SQLite takes no password: no URL may be logged at all
    argv = ["run", "small_sweep", "--home", str(home), "--experiments", str(Path(__file__).parent / "experiments_sweep"),
            "--storage", storage, "--trials", "1", "--set", "epochs=1", "--set", "pitch_scenes=30"]
    assert cli.main(argv) == 0
    runs = mlflow.search_runs(experiment_names=["small_sweep"], output_format="list")
    assert len(runs) == 2  # the sweep and its trial
    logged = [str(v) for r in runs for v in (*r.data.params.values(), *r.data.tags.values())]
    assert not [v for v in logged if "study.db" in v]


def test_dashboard_serves_the_sweeps_study_on_loopback(tmp_path):
    """A real optuna-dashboard process on the study `run` wrote (its journal file): the study and each trial's
    per-epoch objective come back over HTTP on 127.0.0.1."""
    from blipexp.sweep import optuna_storage

    home = tmp_path / "home"
    study = optuna.create_study(study_name="small_sweep-tiny", storage=optuna_storage(home), direction="maximize")
    for pruned_after in (3, 1):
        trial = study.ask()
        for epoch in range(1, pruned_after + 1):
            trial.report(0.5 * epoch, epoch)
        study.tell(trial, 0.5 * pruned_after)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "blipexp", "dashboard", "small_sweep", "--tiny", "--home",
                               str(home), "--experiments", str(SWEEPS), "--port", str(port)],
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        first = server.stdout.readline()
        assert first.startswith(f"optuna-dashboard on http://127.0.0.1:{port}/dashboard/studies/"), first
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as answer:
                    studies = json.load(answer)["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not answer in 60 s"
                time.sleep(0.3)
        [summary] = studies
        assert summary["study_name"] == "small_sweep-tiny"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", timeout=10) as answer:
            trials = json.load(answer)["trials"]
        assert [len(t["intermediate_values"]) for t in trials] == [3, 1]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
        server.stdout.close()


def test_the_dashboard_command_starts_without_importing_training():
    """`blipexp dashboard` needs the study, not the trial loop: blipexp.sweep imports its parts when first used, so
    the command does not import torch, transformers and peft (~8 s before the dashboard answers)."""
    code = ("import sys, blipexp.cli.dashboard; "
            "print(sorted({'torch', 'transformers', 'peft', 'blipexp.sweep.loop'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout


def test_dashboard_names_the_fix_when_the_sweep_never_ran(tmp_path, capsys):
    assert cli.main(["dashboard", "small_sweep", "--home", str(tmp_path), "--experiments", str(SWEEPS)]) == 2
    assert "no study 'small_sweep-tiny'" in capsys.readouterr().err
    assert cli.main(["dashboard", "football_baseline", "--home", str(tmp_path),
                     "--experiments", str(EXPERIMENTS)]) == 2
    assert "is a single run, not a sweep" in capsys.readouterr().err


def test_sigterm_to_blipexp_ui_stops_the_mlflow_server_and_frees_the_port(home):
    """`blipexp ui` becomes `mlflow ui` (exec), which forwards SIGTERM to its server: nothing keeps the port."""
    import psutil

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "blipexp", "ui", "--port", str(port), "--home",
                               str(home)], env=child_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_health(server, f"http://127.0.0.1:{port}", 120)
        family = psutil.Process(server.pid).children(recursive=True)
        assert family, "mlflow ui serves from a child process"
        server.send_signal(signal.SIGTERM)  # to blipexp's process only, as `kill PID` does
        server.wait(timeout=60)
        gone, alive = psutil.wait_procs(family, timeout=60)
        assert not alive, f"left running after SIGTERM: {[p.cmdline() for p in alive]}"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
