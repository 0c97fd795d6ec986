"""The private APIs blipexp still relies on, each kept in one small function, each asserted here to behave as that
function assumes: a failure here means the library changed, and names the function to revisit. Plus the
process-wide state blipexp no longer touches (a notebook's matplotlib backend, the environment at import)."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop


def test_mlflow_keeps_the_experiment_set_experiment_chose_in_fluent_active_experiment_id(home):
    """registry._in_experiment reads it (MLflow has no public getter) to restore it afterwards."""
    import mlflow
    from mlflow.tracking import fluent

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")  # the copied empty store: no migrations to wait for
    try:
        experiment = mlflow.set_experiment("private-api-check")
        assert fluent._active_experiment_id == experiment.experiment_id
    finally:
        mlflow.set_tracking_uri(None)


def test_the_trainer_reports_load_results_through_issue_warnings_after_load():
    """trainer.CaptionTrainer overrides it to drop BLIP's tied decoder weights from the "missing" warning."""
    from transformers import Trainer

    parameters = list(inspect.signature(Trainer._issue_warnings_after_load).parameters)
    assert parameters == ["self", "load_result"]
    assert "_issue_warnings_after_load" in inspect.getsource(Trainer._load_best_model)


def test_the_trainer_caches_eval_loaders_only_with_persistent_workers():
    """trainer.CaptionTrainer.get_eval_dataloader turns persistent workers off for one call to get a loader of
    another split: transformers caches the per-epoch loader exactly when they are on."""
    from transformers import Trainer

    source = inspect.getsource(Trainer.get_eval_dataloader)
    assert "dataloader_persistent_workers" in source and "_eval_dataloaders" in source


def test_a_datasets_table_carries_a_content_fingerprint():
    """hub_dataset.samples_from_arrow ids the table's content (its first-look cache key) by Dataset._fingerprint."""
    import datasets

    one = datasets.Dataset.from_dict({"text": ["a", "b"]})
    other = datasets.Dataset.from_dict({"text": ["a", "c"]})
    assert isinstance(one._fingerprint, str) and one._fingerprint
    assert one._fingerprint != other._fingerprint
    assert one._fingerprint == datasets.Dataset.from_dict({"text": ["a", "b"]})._fingerprint


def test_both_hub_libraries_read_their_offline_flag_from_a_module_constant():
    """hub_dataset._offline_mode sets these two flags for one load (both libraries read them at call time)."""
    import datasets
    from huggingface_hub import constants

    assert isinstance(constants.HF_HUB_OFFLINE, bool) and isinstance(datasets.config.HF_HUB_OFFLINE, bool)
    assert "HF_HUB_OFFLINE" in inspect.getsource(constants.is_offline_mode)


def test_plotting_a_sweep_switches_no_matplotlib_backend(home):
    """A notebook's inline backend stays: the sweep's plots are saved, never shown. Here a non-default backend
    (svg) stands for the notebook's, in this process, and is put back afterwards."""
    import matplotlib
    import matplotlib.pyplot as plt
    import mlflow
    import optuna

    from blipexp import tracking
    from blipexp.sweep import report

    previous = matplotlib.get_backend()
    plt.switch_backend("svg")
    try:
        tracking.configure(home)
        tracking.use_experiment("plots", home)
        study = optuna.create_study()
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
        with tracking.new_run("sweep", tags={}) as run:
            report._log_plots(run, study)
        assert matplotlib.get_backend() == "svg"
        assert mlflow.MlflowClient().list_artifacts(run.id, "plots"), "the plots were drawn and saved"
    finally:
        plt.switch_backend(previous)


@pytest.mark.parametrize("name", ["MLFLOW_DISABLE_TELEMETRY", "HF_HUB_DISABLE_TELEMETRY", "DO_NOT_TRACK"])
def test_importing_blipexp_sets_no_environment_variable_and_the_command_line_turns_telemetry_off(name):
    env = {k: v for k, v in os.environ.items() if k != name}
    imported = subprocess.run([sys.executable, "-c", f"import os, blipexp; print(os.environ.get('{name}'))"],
                              capture_output=True, text=True, env=env, timeout=120)
    assert imported.stdout.strip() == "None", "a library import leaves the environment alone"
    command = subprocess.run([sys.executable, "-c", "import os, sys; from blipexp import cli; cli.main(['list']);"
                              f"print(os.environ.get('{name}'))"], capture_output=True, text=True, env=env,
                             timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert command.stdout.strip().splitlines()[-1] in ("true", "1")


def test_mlflows_scoring_server_names_its_model_path_variable_and_awaits_predict_in_the_default_executor():
    """serving._widen_request_threads acts only where this variable is set, on the loop's default executor."""
    import importlib.util
    from pathlib import Path

    from mlflow.pyfunc import scoring_server

    from blipexp.serving import captioner as serving

    assert scoring_server._SERVER_MODEL_PATH == serving.SERVER_MODEL_PATH_VARIABLE
    app = Path(importlib.util.find_spec("mlflow.pyfunc.scoring_server.app").origin).read_text()  # importing it loads
    assert "_SERVER_MODEL_PATH" in app, "the server loads the model named by that variable"
    assert "asyncio.to_thread(" in inspect.getsource(scoring_server), "predict runs in the default executor"


def test_a_request_thread_finds_its_pool_and_a_raised_bound_runs_more_requests_at_once(monkeypatch):
    """serving._widen_request_threads: a pool worker's Thread._args[0] is a weak reference to its pool (asyncio's
    default executor is such a pool), and raising the pool's _max_workers makes it start more threads."""
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from blipexp.serving import captioner as serving

    default = asyncio.run(asyncio.to_thread(lambda: threading.current_thread()._args[0]()))
    assert isinstance(default, ThreadPoolExecutor), "asyncio.to_thread runs in a ThreadPoolExecutor's thread"
    monkeypatch.setenv(serving.SERVER_MODEL_PATH_VARIABLE, "model")
    assert not serving._widen_request_threads(3), "not a pool's thread: nothing done, try again later"
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(serving._widen_request_threads, 3).result()
        assert pool._max_workers == 3
        together = threading.Barrier(3, timeout=30)  # broken (an error) unless 3 threads wait on it at once
        for future in [pool.submit(together.wait) for _ in range(3)]:
            future.result()


EXITING = """
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from blipexp.runtime.exiting import exit_now

folder = Path(sys.argv[1])
atexit.register(lambda: (folder / "atexit").write_text("ran"))
threading.Thread(target=lambda: (time.sleep(0.5), (folder / "thread").write_text("joined"))).start()
ThreadPoolExecutor(1).submit(lambda: (time.sleep(0.5), (folder / "pool").write_text("finished")))
print("no newline at the end", end="")
exit_now(3)
"""


def test_exit_now_joins_threads_runs_exit_handlers_flushes_and_keeps_the_code(tmp_path):
    """runtime.exiting ends a command with threading._shutdown and atexit._run_exitfuncs, then os._exit: what
    Python's exit does before it tears the modules down. A non-daemon thread and a thread pool's work still finish,
    an atexit handler runs, buffered output is written and the exit code is the command's."""
    done = subprocess.run([sys.executable, "-c", EXITING, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stdout == "no newline at the end"
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"atexit": "ran", "thread": "joined",
                                                                  "pool": "finished"}
