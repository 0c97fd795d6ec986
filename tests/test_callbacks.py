"""CaptionMetricsCallback against a real MLflow store: what it writes, when, and what stops training."""
import math

import mlflow
import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from blipexp import tracking
from blipexp.training.callbacks import CaptionMetricsCallback, EarlyStopping, NonFiniteMetric

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop


@pytest.fixture
def run(home):
    tracking.configure(home)
    tracking.use_experiment("callbacks", home)
    with tracking.new_run("callback-test", tags={}) as active:
        yield active


def hooks(step: int, epoch: float = 0.0):
    """The (args, state, control) a Trainer passes to its callbacks."""
    return TrainingArguments(output_dir="unused", report_to="none"), TrainerState(global_step=step, epoch=epoch), \
        TrainerControl()


def history(run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in mlflow.MlflowClient().get_metric_history(run.id, key))


def test_training_loss_points_are_written_with_the_epochs_validation_metrics_in_one_write(run):
    callback = CaptionMetricsCallback(total_epochs=2, echo=False)
    writes = tracking.WRITES.calls
    for step, loss in ((2, 3.0), (4, 2.5), (6, 2.0)):
        callback.on_log(*hooks(step), logs={"loss": loss, "learning_rate": 1e-4})
    callback.on_epoch_end(*hooks(6))
    assert tracking.WRITES.calls == writes, "nothing is written per log, nor at the end of a short epoch"
    assert history(run, "train_loss") == []
    callback.record(1, {"loss": 2.1, "cider": 0.5}, seconds=1.0)
    assert tracking.WRITES.calls == writes + 1, "the epoch's points and its val_* in one write, through tracking"
    assert history(run, "train_loss") == [(2, 3.0), (4, 2.5), (6, 2.0)]
    assert [step for step, _ in history(run, "learning_rate")] == [2, 4, 6]
    assert history(run, "val_cider") == [(1, 0.5)]
    callback.on_train_end(*hooks(6))
    assert tracking.WRITES.calls == writes + 1, "nothing pending: no empty write"


def test_a_long_epoch_writes_its_loss_points_as_it_ends(run, monkeypatch):
    monkeypatch.setattr(tracking, "WRITE_EVERY_SECONDS", 0.0)  # as if the epoch took longer than 30 s
    callback = CaptionMetricsCallback(total_epochs=2, echo=False)
    callback.on_log(*hooks(2), logs={"loss": 3.0})
    callback.on_epoch_end(*hooks(2))
    assert history(run, "train_loss") == [(2, 3.0)]
    callback.on_log(*hooks(4), logs={"loss": 2.0})
    callback.on_train_end(*hooks(4))
    assert history(run, "train_loss") == [(2, 3.0), (4, 2.0)], "what is left is written when training ends"


def test_a_nan_loss_stops_training_keeps_the_curve_so_far_and_says_where_and_the_fix(run):
    callback = CaptionMetricsCallback(total_epochs=2, echo=False)
    callback.on_log(*hooks(2, epoch=0.5), logs={"loss": 3.0})
    args, state, control = hooks(6, epoch=1.5)
    message = "training loss is nan at step 6 (epoch 2 of 2): the training diverged; lower learning_rate (now 5e-05)"
    with pytest.raises(NonFiniteMetric) as failed:
        callback.on_log(args, state, control, logs={"loss": math.nan})
    assert str(failed.value) == message
    assert history(run, "train_loss") == [(2, 3.0)]
    assert run.read().data.tags["fail_reason"] == f"NonFiniteMetric: {message}", "on the run, as a sweep trial's"
    args.max_grad_norm = 0.0
    with pytest.raises(NonFiniteMetric, match=r"lower learning_rate \(now 5e-05\) or clip gradients "
                                              r"\(max_grad_norm, now 0\)$"):
        callback.on_log(args, state, control, logs={"loss": math.inf})


def test_each_epoch_is_logged_kept_printed_and_passed_to_the_listeners(run, capsys):
    heard = []
    callback = CaptionMetricsCallback(total_epochs=3, listeners=[lambda epoch, values: heard.append((epoch, values))])
    callback.record(0, {"loss": 3.5, "cider": 0.1})
    callback.on_evaluate(*hooks(10, epoch=1.0), metrics={"eval_loss": 2.0, "eval_cider": 0.75, "eval_runtime": 9.0,
                                                        "eval_samples_per_second": 4.0, "epoch": 1.0})
    assert heard == [(0, {"loss": 3.5, "cider": 0.1}), (1, {"loss": 2.0, "cider": 0.75})], "timings are not metrics"
    assert callback.history == [{"epoch": 0, "loss": 3.5, "cider": 0.1}, {"epoch": 1, "loss": 2.0, "cider": 0.75}]
    assert history(run, "val_cider") == [(0, 0.1), (1, 0.75)]
    assert [step for step, _ in history(run, "epoch_seconds")] == [1], "epoch 0 did not train: no duration"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "  before training  val loss 3.5000  cider 0.1000"
    assert lines[1].startswith("  epoch 1/3        val loss 2.0000  cider 0.7500  (")


def test_another_split_evaluated_is_not_a_validation_epoch(run):
    callback = CaptionMetricsCallback(total_epochs=1, echo=False)
    callback.on_evaluate(*hooks(10, epoch=1.0), metrics={"test_loss": 2.0, "test_cider": 0.5, "epoch": 1.0})
    assert callback.history == [] and "val_cider" not in run.read().data.metrics


def test_a_non_finite_validation_metric_stops_the_trial(run):
    heard = []
    callback = CaptionMetricsCallback(total_epochs=1, listeners=[lambda *a: heard.append(a)], echo=False)
    with pytest.raises(NonFiniteMetric, match="validation loss not finite after epoch 1: the training diverged; "
                                              "lower learning_rate"):
        callback.record(1, {"loss": math.inf, "cider": 0.5})
    assert heard == [] and callback.history == []


def test_seconds_to_first_step_is_logged_at_the_first_step_only(run):
    callback = CaptionMetricsCallback(total_epochs=1, echo=False)
    callback.on_step_begin(*hooks(0))
    callback.on_step_begin(*hooks(1))
    assert [step for step, _ in history(run, "seconds_to_first_step")] == [0]


def test_other_ranks_of_a_multi_process_run_neither_log_nor_print(run, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    heard = []
    callback = CaptionMetricsCallback(total_epochs=1, listeners=[lambda epoch, _: heard.append(epoch)])
    assert not callback.is_main_process
    callback.on_step_begin(*hooks(0))
    callback.on_log(*hooks(2), logs={"loss": 3.0})
    callback.record(1, {"loss": 2.0, "cider": 0.5}, seconds=1.0)
    callback.on_train_end(*hooks(2))
    assert run.read().data.metrics == {} and capsys.readouterr().out == ""
    assert heard == [1] and callback.history == [{"epoch": 1, "loss": 2.0, "cider": 0.5}], "every rank keeps score"


def stopper(patience: int, threshold: float, metric: str = "cider", greater_is_better: bool = True,
            echo: bool = False):
    metrics = CaptionMetricsCallback(total_epochs=9, echo=False)
    return metrics, EarlyStopping(metrics, metric, greater_is_better, patience, threshold, echo=echo)


def evaluate_epochs(metrics, stop, values):
    """Record each epoch's objective and let the stopper judge it; whether training stops after each epoch."""
    controls = []
    for epoch, value in enumerate(values, start=1):
        args, state, control = hooks(epoch * 10, epoch=float(epoch))
        metrics.record(epoch, {stop.metric: value})
        stop.on_evaluate(args, state, control)
        controls.append(control.should_training_stop)
    return controls


def test_early_stopping_waits_patience_epochs_without_an_improvement_above_the_threshold(run, capsys):
    metrics, stop = stopper(patience=2, threshold=0.01, echo=True)
    metrics.record(0, {"cider": 5.0})  # the untrained model is no epoch to beat: 1 on only, as best_epoch
    controls = evaluate_epochs(metrics, stop, [0.5, 0.9, 0.905, 0.95, 0.955, 0.958])
    assert controls == [False, False, False, False, False, True]
    reason = "no improvement of cider > 0.01 for 2 epoch(s) (last improvement: 0.95 at epoch 4)"
    assert stop.stopped_epoch == 6
    assert run.read().data.tags["stop_reason"] == reason
    assert history(run, "stopped_epoch") == [(6, 6.0)]
    assert f"  early stop after epoch 6: {reason}" in capsys.readouterr().out.splitlines()


def test_early_stopping_follows_a_lower_is_better_objective(run):
    metrics, stop = stopper(patience=1, threshold=0.0, metric="loss", greater_is_better=False)
    assert evaluate_epochs(metrics, stop, [3.0, 2.0, 2.5]) == [False, False, True]
    assert run.read().data.tags["stop_reason"] == "no improvement of loss > 0 for 1 epoch(s) (last improvement: 2 at epoch 2)"


def test_another_evaluation_after_the_stop_is_not_judged_again(run):
    metrics, stop = stopper(patience=1, threshold=0.0)
    assert evaluate_epochs(metrics, stop, [1.0, 1.0]) == [False, True]
    stop.on_evaluate(*hooks(30, epoch=2.0))  # the final test split's evaluation: no new epoch
    assert history(run, "stopped_epoch") == [(2, 2.0)]
