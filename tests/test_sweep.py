"""Sweeps on the tiny model: real Optuna storage and a real MLflow store in a temp dir."""
import subprocess
import sys
import warnings
from pathlib import Path

import mlflow
import optuna
import pytest

from blipexp import tracking
from blipexp.data import load_data
from blipexp.experiment import catalog
from blipexp.sweep import format_param, open_study, optuna_storage, run_sweep, summary_table

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop

SWEEP_EXPERIMENTS = Path(__file__).parent / "experiments_sweep"


def small_spec(**changes):
    return catalog.load("small_sweep", SWEEP_EXPERIMENTS).replace(**changes)


def runs_of(home):
    tracking.configure(home)  # tracking and registry URIs both: earlier tests point them elsewhere
    return mlflow.search_runs(experiment_names=["small_sweep"], output_format="list")


@pytest.fixture(scope="module")
def swept(new_home):
    """Four trials: three sensible learning rates, then 1e-7, which cannot learn and must be pruned (by the paired
    pruner: the median rule's own tests need no training, test_pruner.py)."""
    home = new_home()
    spec = small_spec(pruner="paired")
    tracking.configure(home)
    tracking.use_experiment(spec.experiment_name, home)
    study = open_study(spec, home)
    for lr in (3e-3, 2e-3, 1e-3, 1e-7):
        study.enqueue_trial({"learning_rate": lr})
    result = run_sweep(spec, load_data(spec, home), home, echo=False)
    return spec, home, result


def test_each_trial_is_a_nested_run_under_one_sweep_run(swept):
    spec, home, result = swept
    runs = runs_of(home)
    parents = [r for r in runs if r.data.tags.get("blipexp.role") == "sweep"]
    trials = [r for r in runs if "optuna_trial" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_id == result.parent_run_id
    assert len(trials) == spec.n_trials
    assert all(r.data.tags["mlflow.parentRunId"] == result.parent_run_id for r in trials)
    assert all(r.info.status == "FINISHED" for r in runs), "no run left RUNNING or FAILED"


def test_trial_states_agree_between_optuna_and_mlflow(swept):
    _, home, result = swept
    by_number = {int(r.data.tags["optuna_trial"]): r for r in runs_of(home) if "optuna_trial" in r.data.tags}
    for trial in result.study.trials:
        assert by_number[trial.number].data.tags["trial_state"] == trial.state.name
        assert by_number[trial.number].data.params["learning_rate"] == str(trial.params["learning_rate"])


def test_a_hopeless_trial_is_pruned_after_its_first_epoch(swept):
    _, home, result = swept
    hopeless = next(t for t in result.study.trials if t.params["learning_rate"] == 1e-7)
    assert hopeless.state == optuna.trial.TrialState.PRUNED
    assert list(hopeless.intermediate_values) == [1]
    assert not (home / "checkpoints" / hopeless.user_attrs["mlflow_run_id"]).exists()
    tracking.configure(home)
    table = mlflow.load_table("val_samples_by_epoch.json", run_ids=[hopeless.user_attrs["mlflow_run_id"]])
    assert sorted(set(table["epoch"])) == [0, 1], "the pruned epoch's sample captions are written too"


def test_the_paired_pruner_holds_the_best_trials_per_image_scores_of_each_epoch_in_the_study(swept):
    from blipexp.sweep.paired import REFERENCE

    _, home, result = swept
    best, reference = result.best_trial, result.study.user_attrs[REFERENCE]
    assert reference["trial"] == best.number and sorted(reference["scores"]) == ["1", "2", "3"]
    validation = int(mlflow.get_run(best.user_attrs["mlflow_run_id"]).data.params["data_val_images_per_epoch"])
    for epoch, values in reference["scores"].items():
        assert len(values) == validation >= 10, "every image of the epoch's validation: enough for a test"
        assert sum(values) / len(values) == pytest.approx(best.intermediate_values[int(epoch)], abs=1e-4), \
            "the scores of the epoch whose objective the trial reported"


def test_the_untrained_model_is_evaluated_once_per_sweep(swept):
    _, home, result = swept
    trial_runs = [r for r in runs_of(home) if "optuna_trial" in r.data.tags]
    client = mlflow.MlflowClient()
    epoch0 = {r.data.tags["optuna_trial"]: [m for m in client.get_metric_history(r.info.run_id, "val_cider") if m.step == 0]
              for r in trial_runs}
    assert all(len(points) == 1 for points in epoch0.values()), "every trial run still charts its epoch 0"
    assert len({points[0].value for points in epoch0.values()}) == 1
    shared = [v for k, v in result.study.user_attrs.items() if k.startswith("untrained:")]
    assert len(shared) == 1 and shared[0]["cider"] == epoch0["0"][0].value
    sources = sorted(r.data.params["untrained_scores"] for r in trial_runs)
    assert sources == ["evaluated"] + ["reused"] * (len(trial_runs) - 1), "one evaluation before training per sweep"


def test_only_the_best_trials_model_is_kept(swept):
    _, home, result = swept
    best = result.best_trial
    assert best.value == max(t.value for t in result.study.trials if t.state.name == "COMPLETE")
    kept = [p for p in (home / "checkpoints").glob("*/model")]
    assert kept == [result.best_model_dir]


def test_the_sweep_run_holds_the_search_and_its_plots(swept):
    _, home, result = swept
    run = mlflow.get_run(result.parent_run_id)
    assert run.data.metrics["best_objective"] == pytest.approx(result.best_trial.value)
    assert "learning_rate" in run.data.params["search_space"]
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(result.parent_run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/intermediate_values.png"} <= plots, "why a trial was pruned"


def test_rerunning_a_finished_sweep_runs_nothing_more(swept):
    spec, home, result = swept
    again = run_sweep(spec, load_data(spec, home), home, echo=False)
    assert len(again.study.trials) == spec.n_trials and again.parent_run_id == result.parent_run_id


def test_the_sweep_run_and_a_killed_trials_run_are_written_through_tracking(home):
    """The sweep's own writes (its run; a trial run a killed process left RUNNING) go through blipexp.tracking,
    whose WRITES the benchmark reads, with the same keys as before."""
    from blipexp.sweep import loop, recovery

    spec = small_spec()
    tracking.configure(home)
    experiment_id = tracking.use_experiment(spec.experiment_name, home)
    study = open_study(spec, home)
    before = tracking.WRITES.calls
    parent = mlflow.get_run(loop._parent_run(study, spec))
    assert tracking.WRITES.calls > before, "the sweep run's params and spec.json were written around tracking"
    assert parent.data.tags["profile"] == "tiny" and parent.data.params["n_trials"] == str(spec.n_trials)

    trial = study.ask()  # its process was killed before recording host and pid
    orphan = mlflow.MlflowClient().create_run(experiment_id, tags={"optuna_study": study.study_name,
                                                                   "optuna_trial": str(trial.number)})
    (home / "checkpoints" / orphan.info.run_id).mkdir(parents=True)
    assert recovery.fail_orphaned_trials(study) == 1
    before = tracking.WRITES.calls
    assert recovery.reconcile_runs(study, home) == 1
    assert tracking.WRITES.calls > before, "the killed trial's run was ended around tracking"
    run = mlflow.get_run(orphan.info.run_id)
    assert run.info.status == "KILLED" and run.data.tags["trial_state"] == "FAIL"
    assert run.data.tags["fail_reason"] == "its process stopped (killed)"
    assert not (home / "checkpoints" / orphan.info.run_id).exists()


def test_workers_sharing_a_study_do_not_draw_the_same_parameters(tmp_path):
    from blipexp.sweep import sampler, suggest

    spec = catalog.load("football_lr_sweep", Path(__file__).parent.parent / "experiments").tiny()  # a float range
    workers = open_study(spec, tmp_path), open_study(spec, tmp_path)  # two processes' views of one study
    drawn = []
    for worker in workers + workers:  # taking turns, as under the study lock
        worker.sampler = sampler(spec, len(worker.trials))  # what _run_trials does before each ask
        trial = worker.ask()
        drawn.append(suggest(trial, "learning_rate", spec.search_space()["learning_rate"]))
    assert len(set(drawn)) == 4, drawn
    again = open_study(spec, tmp_path / "again")
    again.sampler = sampler(spec, 0)
    assert suggest(again.ask(), "learning_rate", spec.search_space()["learning_rate"]) == drawn[0]  # still seeded


# --- the notebook's own scale: 6 images


def six_photos(folder):
    """6 captioned photos, as the notebook's football set: validation and test then hold one image each."""
    from test_survey import photo

    folder.mkdir()
    captions = ["a red ball on green grass", "two players in blue shirts", "a goalkeeper jumps for the ball",
                "a crowd in the stands at night", "a referee shows a yellow card", "a striker kicks the ball into the net"]
    for i in range(6):
        photo(folder / f"{i}.jpg", i, size=(320, 240))
    (folder / "captions.csv").write_text("image,text\n" + "".join(f"{i}.jpg,{c}\n" for i, c in enumerate(captions)))
    return folder


@pytest.mark.slow
def test_a_six_image_sweep_ranks_its_trials_and_registers_the_best(tmp_path, capsys, new_home):
    from conftest import EXPERIMENTS

    from blipexp import cli

    folder = six_photos(tmp_path / "six")

    def sweep(home, *sets, trials=3):
        argv = ["run", "football_lr_sweep", "--tiny", "--trials", str(trials), "--home", str(home), "--experiments",
                str(EXPERIMENTS), "--set", f"dataset={folder}", *(a for s in sets for a in ("--set", s))]
        assert cli.main(argv) == 0
        tracking.configure(home)
        return optuna.load_study(study_name="football_lr_sweep-tiny", storage=optuna_storage(home))

    literal = sweep(new_home("split-df"), "cider_df=split", trials=1)  # pycocoevalcap's idf, of the one scored image
    assert [t.value for t in literal.trials] == [0.0], "the problem: a trial scores 0, whatever it learned"
    capsys.readouterr()  # only the second sweep's console is read below

    study = sweep(new_home("auto"))
    out = capsys.readouterr().out
    assert "idf from the references of 5 training + validation images" in out
    values = [t.value for t in study.trials]
    # whether trials then differ depends on the machine (its precision) and training; that they can differ does not
    assert max(values) > 0, f"the corpus idf scores the one validation image: not every trial 0: {values}"
    best = max(study.trials, key=lambda t: t.value)
    versions = mlflow.MlflowClient().search_model_versions("name='blip-football-tiny'")
    assert len(versions) == 1 and versions[0].run_id == best.user_attrs["mlflow_run_id"]
    assert float(versions[0].tags["objective"]) == best.value
    run = mlflow.get_run(best.user_attrs["mlflow_run_id"])
    assert run.data.params["cider_df_used"] == "corpus" and run.data.metrics["best_val_cider_coco"] == 0.0
    from blipexp.sweep.report import range_edge_advice, range_edges

    edges = range_edges(best)  # printed under the summary and tagged on the sweep run, whichever trial won
    assert all(line in out for line in range_edge_advice(best)) and out.count("note: the best ") == len(edges)
    parent = mlflow.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.data.tags.get("best_at_range_edge", "") == ", ".join(f"{k} ({s})" for k, s in edges.items())


def _best_of(params: dict, distributions: dict) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(params=params, distributions=distributions, value=1.0)


LR = optuna.distributions.FloatDistribution(1e-5, 3e-3, log=True)
EPOCHS = optuna.distributions.IntDistribution(2, 12)


@pytest.mark.parametrize("params, edges", [
    ({"learning_rate": 2.8e-3, "epochs": 7}, {"learning_rate": "top"}),  # within 5% of the log range from its top
    ({"learning_rate": 1e-4, "epochs": 12}, {"epochs": "top"}),
    ({"learning_rate": 1.2e-5, "epochs": 2}, {"learning_rate": "bottom", "epochs": "bottom"}),
    ({"learning_rate": 2e-3, "epochs": 11}, {}),  # 2e-3 is 7% below the top on a log scale; 11 is not 12
])
def test_a_best_value_at_the_edge_of_its_range_is_named(params, edges):
    from blipexp.sweep.report import range_edges

    assert range_edges(_best_of(params, {"learning_rate": LR, "epochs": EPOCHS})) == edges


def test_choices_and_two_value_ranges_have_no_edge_to_report():
    from blipexp.sweep.report import range_edges

    distributions = {"lr_scheduler": optuna.distributions.CategoricalDistribution(["linear", "cosine"]),
                     "epochs": optuna.distributions.IntDistribution(1, 2),
                     "lora_r": optuna.distributions.IntDistribution(4, 16, step=4)}
    assert range_edges(_best_of({"lr_scheduler": "cosine", "epochs": 2, "lora_r": 16}, distributions)) == \
        {"lora_r": "top"}, "4..16 by 4 has four values: 16 is its top"


def test_the_edge_is_on_the_sweep_run_and_the_console_says_which_way_to_widen(home):
    from blipexp.sweep.report import log_parent_summary, range_edge_advice

    tracking.configure(home)
    tracking.use_experiment("edges", home)
    study = optuna.create_study(direction="maximize")
    for lr, value in ((1e-4, 0.5), (2.9e-3, 0.9)):
        study.add_trial(optuna.trial.create_trial(params={"learning_rate": lr, "epochs": 12}, value=value,
                                                  distributions={"learning_rate": LR, "epochs": EPOCHS}))
    with tracking.new_run("sweep", tags={}) as run:
        log_parent_summary(run, study, study.best_trial)
    assert mlflow.get_run(run.id).data.tags["best_at_range_edge"] == "learning_rate (top), epochs (top)"
    assert range_edge_advice(study.best_trial) == [
        "note: the best learning_rate (0.0029) is at the top of its range 1e-05..0.003: a better value may lie above "
        "it; widen the range in search_space() and run a new sweep (--new) to find out",
        "note: the best epochs (12) is at the top of its range 2..12: a better value may lie above it; widen the "
        "range in search_space() and run a new sweep (--new) to find out"]


def test_on_too_few_validation_images_the_runner_up_line_says_so_and_logs_no_interval_or_p(home):
    from blipexp.scoring import evidence
    from blipexp.sweep.report import log_separation

    tracking.configure(home)
    tracking.use_experiment("separation", home)
    few = evidence.Difference("cider", 4.0, 4.5, None, None, None, images=6)  # as evidence.paired gives on 6 images
    with tracking.new_run("sweep", tags={}) as run:
        log_separation(run, 3, 1, few)
    logged = mlflow.get_run(run.id).data
    assert logged.tags["best_vs_runner_up"] == ("best vs runner-up on the validation images: too few images for an "
                                                "interval (n=6, fewer than 10): trial 3 - trial 1 on cider is +0.5, "
                                                "untested")
    assert logged.metrics["runner_up_difference"] == 0.5
    assert not {"runner_up_ci_low", "runner_up_ci_high", "runner_up_p_value"} & set(logged.metrics)


@pytest.mark.parametrize("confirming, then", [
    (False, "either could be the best (--set confirm_top=2 --set confirm_seeds=3 trains both again"),
    (True, "the confirmation's fresh seeds decide")])
def test_an_indistinguishable_runner_up_line_says_what_decides(confirming, then):
    from blipexp.scoring import evidence
    from blipexp.sweep.report import separation_line

    close = evidence.Difference("cider", 5.42, 5.45, -0.17, 0.21, 0.825, images=128)
    line = separation_line(0, 4, close, confirming)
    assert line.startswith("best vs runner-up on the validation images: no significant difference on cider")
    assert "the two are indistinguishable, and " + then in line
    assert ("confirm_top=2" in line) is not confirming, "no advice to set what is already set"


@pytest.mark.parametrize("value, shown", [(0.0012345, "0.00123"), (3e-3, "0.003"), (12345, "12345"),
                                          (True, "True"), (False, "False"), ("cosine", "cosine")])
def test_a_search_value_of_any_choice_type_is_formatted(value, shown):
    assert format_param(value) == shown


def test_a_sweep_over_strings_and_booleans_prints_tags_and_summarises_them(home, capsys):
    spec = catalog.load("choice_sweep", SWEEP_EXPERIMENTS)
    tracking.configure(home)
    tracking.use_experiment(spec.experiment_name, home)
    study = open_study(spec, home)
    study.enqueue_trial({"lr_scheduler": "cosine", "freeze_vision_encoder": True})
    study.enqueue_trial({"lr_scheduler": "linear", "freeze_vision_encoder": False})
    result = run_sweep(spec, load_data(spec, home), home, echo=True)

    assert "trial 0: lr_scheduler=cosine  freeze_vision_encoder=True" in capsys.readouterr().out
    assert [t.state.name for t in result.study.trials] == ["COMPLETE", "COMPLETE"]
    rows = [line.split() for line in summary_table(result.study).splitlines()]
    assert rows[0][:3] == ["trial", "freeze_vision_encoder", "lr_scheduler"]
    assert [row[1:3] for row in rows[1:3]] == [["True", "cosine"], ["False", "linear"]]
    tags = mlflow.get_run(result.parent_run_id).data.tags
    assert tags["best_lr_scheduler"] == result.best_trial.params["lr_scheduler"]
    assert tags["best_freeze_vision_encoder"] == str(result.best_trial.params["freeze_vision_encoder"])


def test_early_stopping_ends_a_sweep_trial_which_still_completes(home):
    spec = small_spec(n_trials=1, pitch_scenes=30, early_stopping_patience=1, early_stopping_threshold=1e9)
    tracking.configure(home)
    tracking.use_experiment(spec.experiment_name, home)
    result = run_sweep(spec, load_data(spec, home), home, echo=False)
    trial = result.study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1, 2], "stopped after epoch 2 of 3"
    run = mlflow.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.data.metrics["stopped_epoch"] == 2 and run.data.tags["stop_reason"].endswith("at epoch 1)")


def _study_with_equal_trials(trials=((1e-3, 2), (2e-3, 2), (3e-3, 1))) -> optuna.Study:
    """Two complete trials, equal objectives, one pruned: the parameter-importance plot warns that importances are
    equal (a genuine warning), every plot call raises Optuna's ExperimentalWarning (noise)."""
    study = optuna.create_study(direction="maximize")
    space = {"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2),
             "epochs": optuna.distributions.IntDistribution(1, 3)}
    for lr, epochs in trials:  # trials of `epochs` >= 2 complete, others pruned after their first epoch
        study.enqueue_trial({"learning_rate": lr, "epochs": epochs})  # asked, timed and told as a sweep's trials are
        trial = study.ask(space)
        for epoch in range(1, epochs + 1):
            trial.report(0.5, epoch)
        study.tell(trial, 0.5) if epochs >= 2 else study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert [t.params for t in study.trials] == [{"learning_rate": lr, "epochs": e} for lr, e in trials]
    return study


def test_the_sweep_plots_raise_no_experimental_warning_but_keep_real_ones(home):
    from blipexp.sweep.report import log_parent_summary
    from blipexp.sweep.study import best_trial

    tracking.configure(home)
    tracking.use_experiment("plots", home)
    study = _study_with_equal_trials(((1e-3, 2), (2e-3, 3), (3e-3, 1)))  # both parameters vary: importances drawn
    with tracking.new_run("sweep", tags={}) as run, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log_parent_summary(run, study, best_trial(study))
    kinds = {type(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)}
    assert optuna.exceptions.ExperimentalWarning not in kinds
    assert any("importances will be equal" in str(w.message) for w in caught), "a real warning still shows"
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(run.id, "plots")}
    assert {"plots/intermediate_values.png", "plots/param_importances.png"} <= plots


def test_a_contour_is_plotted_over_the_parameters_that_varied(home):
    from blipexp.sweep.report import log_parent_summary
    from blipexp.sweep.study import best_trial

    tracking.configure(home)
    tracking.use_experiment("plots", home)
    study = _study_with_equal_trials(((1e-3, 2), (2e-3, 3), (3e-3, 1)))
    with tracking.new_run("sweep", tags={}) as run:
        log_parent_summary(run, study, best_trial(study))
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(run.id, "plots")}
    assert "plots/contour.png" in plots
    assert "plot_skipped_contour.png" not in mlflow.get_run(run.id).data.tags


def test_one_varied_parameter_gets_no_contour_and_no_importances_and_the_run_says_why(home):
    from blipexp.sweep.report import log_parent_summary
    from blipexp.sweep.study import best_trial

    tracking.configure(home)
    tracking.use_experiment("plots", home)
    study = _study_with_equal_trials()  # both complete trials ran 2 epochs: only the learning rate varied
    with tracking.new_run("sweep", tags={}) as run:
        log_parent_summary(run, study, best_trial(study))
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(run.id, "plots")}
    assert "plots/intermediate_values.png" in plots
    # a contour over epochs would be empty (and Optuna would log a warning); the learning rate alone holds all
    # the importance: a bar at 100% says nothing
    assert not {"plots/contour.png", "plots/param_importances.png"} & plots
    tags = mlflow.get_run(run.id).data.tags
    assert tags["plot_skipped_contour.png"].startswith("epochs: one value")
    assert tags["plot_skipped_param_importances.png"] == \
        "learning_rate varied over the complete trials: nothing to rank"


def test_the_overall_line_counts_trials_names_the_best_and_estimates_the_time_left():
    from datetime import timedelta

    from blipexp.sweep.report import sweep_status, trial_ended

    spec = small_spec(n_trials=6)
    study = _study_with_equal_trials()
    status = sweep_status(study, spec)
    assert status.startswith("sweep 3/6 done, 1 pruned, 0 failed; best cider 0.5000 (trial 0); ETA "), status
    durations = [t.duration for t in study.trials]
    eta = sum(durations, timedelta()).total_seconds() / 3 * 3  # mean duration x 3 trials left, one worker
    assert status.endswith(f"ETA {eta:.0f} s"), status
    ended = trial_ended(study, spec, 2)
    assert ended.startswith("trial 2 PRUNED cider 0.5000 in ") and ended.endswith(f"[{status}]"), \
        "a pruned trial shows its last epoch's objective"
    assert sweep_status(study, small_spec(n_trials=3)).endswith("(trial 0)"), "nothing left: no ETA"
    assert sweep_status(optuna.create_study(), spec).endswith("no best yet; ETA after the first trial")


NOISE = ("ExperimentalWarning", "There were missing keys", "monitoring system metrics",
         "CloudPickle", "Add type hints to the `predict` method",  # these two: MLflow's pyfunc hints
         "Downloading artifacts", "Loading weights", "Writing model shards",
         "Validating input example", "Successfully registered model", "Created version",  # MLflow's, on registering
         "A new study created", "unique value length")  # Optuna's: blipexp's own line names the study


@pytest.mark.slow
def test_a_sweeps_console_has_an_overall_line_per_trial_and_none_of_the_noise(tmp_path):
    """A real `blipexp run` of a tiny sweep on a fresh home, its console as a user sees it (stdout and stderr), here
    as a log file gets it: outside a terminal, a line per epoch instead of progress bars (no redraws)."""
    import re

    from processes import child_env

    done = subprocess.run([sys.executable, "-m", "blipexp", "run", "small_sweep", "--home", str(tmp_path),
                           "--experiments", str(SWEEP_EXPERIMENTS), "--trials", "2", "--set", "epochs=2",
                           "--set", "test_fraction=0", "--set", "max_new_tokens=6",  # the console, not the scores
                           "--set", "pitch_scenes=30"],
                          env=child_env(), capture_output=True, timeout=600)
    # decoded here, not by text=True, which would turn each \r (a progress bar's redraw) into \n
    done.stdout, done.stderr = done.stdout.decode(), done.stderr.decode()
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-3000:]
    assert not [noise for noise in NOISE if noise in console], console
    assert "\r" not in console, "a progress bar's redraws"
    assert "registered  small-sweep version 1" in done.stdout, "blipexp's own line says it, once"
    assert "Creating initial MLflow database tables" not in console and "alembic" not in console, console
    assert re.findall(r"^ +epoch (\d)/2 +val ", done.stdout, re.M) == ["1", "2"] * 2, done.stdout
    assert re.search(r"^trial 0: learning_rate=\S+   \[sweep 0/2 done, 0 pruned, 0 failed; no best yet; "
                     r"ETA after the first trial\]$", done.stdout, re.M), done.stdout
    took = r"(\d+ s|\d+ min|\d+ h \d+ min)"  # report._duration: a loaded machine may take minutes
    assert re.search(rf"^trial 0 COMPLETE cider \d+\.\d{{4}} in {took}   \[sweep 1/2 done, 0 pruned, 0 failed; "
                     rf"best cider \d+\.\d{{4}} \(trial 0\); ETA {took}\]$", done.stdout, re.M), done.stdout
    assert re.search(rf"^trial 1: .*\[sweep 1/2 done.*ETA {took}\]$", done.stdout, re.M), done.stdout
    assert re.search(r"^trial 1 COMPLETE .*\[sweep 2/2 done, 0 pruned, 0 failed; best cider .*\(trial \d\)\]$",
                     done.stdout, re.M), done.stdout


# --- confirmation: fresh seeds only, each confirmation run trained once whatever the number of workers


def planted_sweep(home, spec, values=(9.0, 8.0, 1.0)) -> tuple[optuna.Study, str]:
    """A study (journal in home) whose complete trials 0, 1, 2 (learning rates 3e-3, 2e-3, 1e-3) have `values`, each
    with a run (test_cider 9.5, 8.5, ...) and a model folder, and the sweep run: what a sweep leaves before it
    confirms and registers, without training."""
    from blipexp.sweep import loop

    tracking.configure(home)
    tracking.use_experiment(spec.experiment_name, home)
    study = open_study(spec, home)
    sweep_run = loop._parent_run(study, spec)
    lr = optuna.distributions.CategoricalDistribution(list(spec.search_space()["learning_rate"].options))
    for number, (rate, value) in enumerate(zip((3e-3, 2e-3, 1e-3), values)):
        with tracking.new_run(f"trial {number}", tags={}) as run:
            run.metrics({"test_cider": value + 0.5, "test_cider_ci_low": value})
        folder = home / "checkpoints" / run.id / "model"
        folder.mkdir(parents=True)
        study.add_trial(optuna.trial.create_trial(
            params={"learning_rate": rate}, distributions={"learning_rate": lr}, value=value,
            user_attrs={"mlflow_run_id": run.id, "model_dir": str(folder)}))
    return study, sweep_run


def test_two_workers_confirm_the_top_two_once_and_register_the_best_fresh_seed_mean(home, monkeypatch, capsys):
    """Two workers of one sweep (two threads, each with its own view of the journal study) finish together: each
    confirmation run (trials 0 and 1's parameters, seeds 43 and 44: never their own 42) trains once, in one of them,
    while the other trains. Trial 0 won its trial by luck (9.0; 4.35 over fresh seeds) and trial 1 wins on the mean
    (6.35): trial 1's own model is registered, once, tagged with how it was chosen; the means are over the fresh
    seeds alone, the trial's value beside them (it was picked for being the best)."""
    import statistics
    import threading

    from blipexp.cli import run as runner
    from blipexp.sweep import SweepResult, choose, confirm
    from blipexp.training.train import TrialResult

    from blipexp.sweep import loop

    spec = small_spec(n_trials=3, confirm_top=2, confirm_seeds=2)
    study, sweep_run = planted_sweep(home, spec)
    loop.keep_models(study, loop.kept_models(study, spec))  # as each trial completes: the 2 best keep their folders
    assert [Path(t.user_attrs["model_dir"]).is_dir() for t in study.trials] == [True, True, False]
    trained, overlapping = [], threading.Event()

    def train(configuration, data, home, **kwargs):  # the Trainer's part: what it returns, not its time
        trained.append((configuration.seed, configuration.learning_rate, kwargs["run_name"]))
        if len(trained) == 1:  # the first run lasts until another starts: both workers train at once
            assert overlapping.wait(120), "the second worker never trained while the first did"
        overlapping.set()
        folder = home / "checkpoints" / f"confirm-{configuration.seed}-{configuration.learning_rate}" / "model"
        folder.mkdir(parents=True, exist_ok=True)
        objective = configuration.seed / 10 + (2 if configuration.learning_rate == 2e-3 else 0)
        return TrialResult(f"run-{configuration.seed}", objective, 1, {}, {"cider": objective * 10}, {},
                           model_dir=folder)

    def register(configuration, data, model_dir, run_id, tags):  # the registry's part: a version with its tags
        registered.append((configuration.learning_rate, model_dir, run_id))
        client = mlflow.MlflowClient()
        client.create_registered_model(spec.registered_model)
        return client.create_model_version(spec.registered_model, f"runs:/{run_id}/model", run_id=run_id, tags=tags)

    registered, errors, versions = [], [], []
    monkeypatch.setattr(confirm, "train_trial", train)
    monkeypatch.setattr(runner, "register_trial_model", register)

    def worker() -> None:
        try:
            mine = open_study(spec, home)  # a worker's own view of the shared study
            versions.append(runner._choose_and_register(spec, None, home, SweepResult(mine, sweep_run, None, None),
                                                        None))
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append(exc)

    workers = [threading.Thread(target=worker) for _ in range(2)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=300)
    assert not errors, errors
    assert sorted(run[:2] for run in trained) == [(43, 2e-3), (43, 3e-3), (44, 2e-3), (44, 3e-3)], "each once"
    assert len({run[2] for run in trained}) == 4, "runs that differ only by seed have different names"
    assert "small_sweep · confirm trial 1 · lr=2e-3 · seed=43" in [run[2] for run in trained]
    chosen = study.trials[1]
    assert registered == [(2e-3, Path(chosen.user_attrs["model_dir"]), chosen.user_attrs["mlflow_run_id"])]
    # the worker finding both confirmation runs done registers; the other either left it to it (a run still
    # trained when it looked: None) or, arriving later, finds that version
    assert len(versions) == 2 and {int(v.version) for v in versions if v is not None} == {1}, versions
    assert [p.parent.name for p in (home / "checkpoints").glob("*/model")] == [chosen.user_attrs["mlflow_run_id"]], \
        "the chosen trial's model is kept; the other confirmed trial's and the confirmation runs' are not"
    out = capsys.readouterr().out
    assert out.count("  objective ") == 1, "the spread is printed by the worker that registered"
    assert out.count("the worker that finishes the last confirmation run") == [v is None for v in versions].count(True)

    logged = mlflow.get_run(sweep_run).data
    assert logged.metrics["confirm_objective_mean"] == pytest.approx(6.35)
    assert logged.metrics["confirm_objective_chosen"] == 8.0
    assert logged.metrics["confirm_objective_sd"] == pytest.approx(statistics.stdev([6.3, 6.4]))
    assert logged.metrics["confirm_test_cider_mean"] == pytest.approx(63.5)
    assert logged.metrics["confirm_test_cider_chosen"] == 8.5
    assert logged.tags["chosen_trial"] == "1" and logged.tags[choose.CHOICE_TAG].startswith("choice: trial 1 by ")
    table = tracking.Run(sweep_run).table_columns(choose.TABLE)
    assert table["trial"] == [0, 1] and table["chosen"] == [False, True] and table["seeds"] == ["43, 44"] * 2
    assert table["objective_mean"] == [pytest.approx(4.35), pytest.approx(6.35)]
    tags = mlflow.MlflowClient().get_model_version(spec.registered_model, "1").tags
    assert tags["chosen_by"] == "mean validation cider over 2 fresh seeds, top 2 configurations"
    assert tags["chosen_separated"] == "true" and tags["optuna_trial"] == "1"
    assert tags[confirm.SPREAD_TAG] == "6.3500 ± 0.0707 over 2 fresh seeds (the chosen trial: 8.0000)"
    assert tags["seed_spread_test_cider"].startswith("63.5000 ± 0.7071 over 2 fresh seeds (the chosen trial: 8.5")
    records = [study.user_attrs[unit.attr] for unit in confirm.plan(spec, study.trials[:2])]
    assert [(r["state"], r["run_id"]) for r in records] == [("done", "run-43"), ("done", "run-44")] * 2


@pytest.mark.slow
def test_a_trial_that_won_on_its_seeds_luck_loses_on_the_mean_over_fresh_seeds(home, monkeypatch, capsys):
    """A real sweep of two configurations, each confirmed with two fresh seeds: trial 1 (learning rate 1e-7: it
    cannot learn) is told a value 100 higher than it scored, the argmax by luck; over fresh seeds it scores the
    untrained model's value, below trial 0's (3e-3), so trial 0's own model is registered, not the lucky one's."""
    import dataclasses

    from blipexp.cli import run as runner
    from blipexp.sweep import choose, loop

    spec = small_spec(n_trials=2, epochs=1, pitch_scenes=30, test_fraction=0.0, max_new_tokens=6, sample_captions=0,
                      confirm_top=2, confirm_seeds=2)
    real = loop.train_trial

    def lucky(configuration, *args, **kwargs):  # the trial's objective as its seed might have flattered it
        result = real(configuration, *args, **kwargs)
        return dataclasses.replace(result, objective=result.objective + 100) \
            if configuration.learning_rate == 1e-7 else result

    monkeypatch.setattr(loop, "train_trial", lucky)
    tracking.configure(home)
    study = open_study(spec, home)
    for learning_rate in (3e-3, 1e-7):
        study.enqueue_trial({"learning_rate": learning_rate})
    assert runner.run_experiment(spec, home) == 0
    out = capsys.readouterr().out

    study = open_study(spec, home)
    steady, argmax = study.trials
    assert study.best_trial.number == argmax.number == 1, "the lucky trial tops the trials"
    (version,) = mlflow.MlflowClient().search_model_versions("name='small-sweep'")
    assert version.run_id == steady.user_attrs["mlflow_run_id"], "the configuration with the best fresh-seed mean"
    assert version.tags["chosen_by"] == "mean validation cider over 2 fresh seeds, top 2 configurations"
    assert version.tags["chosen_separated"] in ("true", "false") and version.tags["optuna_trial"] == "0"
    sweep_run = mlflow.get_run(study.user_attrs["mlflow_parent_run_id"])
    table = tracking.Run(sweep_run.info.run_id).table_columns(choose.TABLE)
    assert table["trial"] == [1, 0] and table["chosen"] == [False, True], "in trial rank, the lucky one first"
    assert table["params"] == ["learning_rate=1e-07", "learning_rate=0.003"] and table["seeds"] == ["43, 44"] * 2
    assert table["objective_mean"][1] > table["objective_mean"][0] and table["trial_objective"][0] > 100
    line = sweep_run.data.tags[choose.CHOICE_TAG]
    assert line.startswith("choice: trial 0 by the mean validation cider over 2 fresh seeds, top 2 configurations: ")
    assert line.endswith(f"trial 1, the best single trial ({argmax.value:.4f}), lost on the mean")
    assert f"\n{line}\n" in out, "the console says it in the same one line"

    confirmations = tracking.find_runs("tags.`blipexp.role` = 'confirm_seed'")
    names = sorted(run.info.run_name for run in confirmations)
    assert [(name.startswith(f"small_sweep · confirm trial {trial} · lr={rate} · "), f" · {seed} · " in name)
            for name, (trial, rate, seed) in zip(names, [(0, "3e-3", "seed=43"), (0, "3e-3", "seed=44"),
                                                         (1, "1e-7", "seed=43"), (1, "1e-7", "seed=44")])
            ] == [(True, True)] * 4, names
    assert len({name.rsplit(" · ", 1)[0] for name in names}) == 4, "told apart by seed, the short id aside"
    kept = [folder.parent.name for folder in (home / "checkpoints").glob("*/model")]
    assert kept == [version.run_id], "the registered trial's model alone: not the other's, nor the confirmations'"


def test_a_confirmation_run_claimed_by_a_killed_worker_is_trained_again_and_a_live_ones_is_not(home):
    from blipexp.runtime import liveness
    from blipexp.sweep import confirm

    spec = small_spec(confirm_seeds=3)
    study, _ = planted_sweep(home, spec)
    killed, live, free = confirm.units(spec, study.best_trial, 3)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    study.set_user_attr(killed.attr, {"state": "claimed", **liveness.this_process(), "pid": str(gone.pid)})
    study.set_user_attr(live.attr, {"state": "claimed", **liveness.this_process()})  # a live worker trains it
    trained = []
    confirm.run_units(study, home, [killed, live, free], lambda unit: trained.append(unit) or {"objective": 1.0})
    assert trained == [killed, free]
    assert [study.user_attrs[u.attr]["state"] for u in (killed, live, free)] == ["done", "claimed", "done"]

    def interrupted(unit):
        raise KeyboardInterrupt

    study.set_user_attr(live.attr, {"state": "claimed", **liveness.this_process(), "pid": str(gone.pid)})
    with pytest.raises(KeyboardInterrupt):
        confirm.run_units(study, home, [live], interrupted)
    assert study.user_attrs[live.attr] == {"state": "released"}, "an interrupted run is left for the next worker"
