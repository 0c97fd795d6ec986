"""CaptionMetricsCallback: relays training and per-epoch caption metrics to MLflow, the console and listeners.

Keys it logs to the active MLflow run:

| key                        | step          | when                                   |
|----------------------------|---------------|----------------------------------------|
| train_loss, learning_rate  | optimizer step| every `logging_steps` (written with the epoch's val_*, or at its end if it took 30 s) |
| val_loss                   | epoch         | after each epoch's evaluation (0: before training) |
| val_bleu1..4, val_rougeL, val_cider, val_cider_coco | epoch | after each epoch's evaluation |
| epoch_seconds              | epoch         | after each epoch's evaluation          |
| seconds_to_first_step      | -             | when the first training step starts (since process start) |

Listeners (e.g. a sweep's Optuna trial) get `(epoch, metrics)` after each evaluation and may raise to stop
training (Optuna's TrialPruned); the exception propagates out of `Trainer.train()`.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NoReturn

import psutil
from transformers import TrainerCallback

from .. import tracking
from ..experiment.metric_keys import CONSOLE_KEYS
from ..runtime import distributed

EpochListener = Callable[[int, dict[str, float]], None]


class NonFiniteMetric(RuntimeError):
    """Training produced a NaN or infinite loss or metric; the trial cannot be trusted."""


class CaptionMetricsCallback(TrainerCallback):
    def __init__(self, total_epochs: int, listeners: list[EpochListener] | None = None, echo: bool = True):
        self.total_epochs = total_epochs
        self.listeners = list(listeners or [])
        self.echo = echo
        self.is_main_process = distributed.is_main_process()  # other ranks of a multi-process run log nothing
        self.history: list[dict[str, float]] = []  # one entry per evaluation, with "epoch"
        self._epoch_started = time.perf_counter()
        self._pending: list[tuple[str, float, int]] = []  # training-loss points not yet written
        self._written = time.perf_counter()  # when points were last written
        self._logged_step, self._logged_epoch = -1, -1  # a resumed run's points up to these are in the run already

    def continue_from(self, history: list[dict[str, float]], logged_step: int, logged_epoch: int) -> None:
        """Resuming an interrupted run: its epochs so far (for the best epoch), and the last step and epoch it has
        logged, which the epochs trained again after its checkpoint do not write a second time."""
        self.history = list(history)
        self._logged_step, self._logged_epoch = logged_step, logged_epoch

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 0 and self.is_main_process and tracking.Run.active():
            # how long a user waits for training to start: imports, the data's first look, model, caches
            tracking.Run.active().metrics({"seconds_to_first_step": time.time() - psutil.Process().create_time()})

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch_started = time.perf_counter()

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            if not math.isfinite(logs["loss"]):
                epoch = max(1, math.ceil(state.epoch or 0))  # the epoch this step belongs to, counted from 1
                self._fail(f"training loss is {logs['loss']} at step {state.global_step} (epoch {epoch} of "
                           f"{self.total_epochs}): the training diverged; {_divergence_fix(args)}")
            metrics = {"train_loss": logs["loss"]}
            if "learning_rate" in logs:
                metrics["learning_rate"] = logs["learning_rate"]
            if self.is_main_process and state.global_step > self._logged_step:
                self._pending += [(k, float(v), state.global_step) for k, v in metrics.items()]

    def _fail(self, reason: str) -> NoReturn:
        """Stop the trial: the curve up to the failure written, the reason tagged on its run (fail_reason, as on a
        sweep's failed trials), NonFiniteMetric raised."""
        self.flush()
        run = tracking.Run.active()
        if self.is_main_process and run:
            run.tags({"fail_reason": f"{NonFiniteMetric.__name__}: {reason}"})
        raise NonFiniteMetric(reason)

    def on_epoch_end(self, args, state, control, **kwargs):
        if time.perf_counter() - self._written >= tracking.WRITE_EVERY_SECONDS:  # else with the epoch's val_*
            self.flush()

    def on_train_end(self, args, state, control, **kwargs):
        self.flush()

    def flush(self, points: list[tuple[str, float, int]] = ()) -> None:
        """Write the pending training-loss points, and `points`, in one batch: a store write costs 5-20 ms, and a
        tiny epoch 0.4 s (BENCHMARKS.md)."""
        run = tracking.Run.active()
        pending, self._pending = [*self._pending, *points], []
        if pending and run:
            run.metric_points(pending)
            self._written = time.perf_counter()

    def on_evaluate(self, args, state, control, metrics: dict[str, float] | None = None, **kwargs):
        metrics = metrics or {}
        values = {k[len("eval_"):]: float(v) for k, v in metrics.items()
                  if k.startswith("eval_") and isinstance(v, (int, float)) and not _is_timing(k)}
        if not values:  # an evaluation of another split (e.g. the final test), not a validation epoch
            return
        self.record(int(round(state.epoch or 0)), values, time.perf_counter() - self._epoch_started)

    def record(self, epoch: int, values: dict[str, float], seconds: float | None = None) -> None:
        """One validation result: checked, logged, kept, printed, passed to the listeners.

        Called by the Trainer after each evaluation, or directly with epoch 0 when the untrained model's
        scores are already known (a sweep's trials share one initial model: it is evaluated once).
        """
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            self._fail(f"validation {', '.join(bad)} not finite after epoch {epoch}"
                       + (": the training diverged; lower learning_rate" if epoch else ""))
        logged = {f"val_{k}": v for k, v in values.items()}
        if epoch > 0 and seconds is not None:
            logged["epoch_seconds"] = seconds
        if self.is_main_process and epoch > self._logged_epoch:
            self.flush([(k, v, epoch) for k, v in logged.items()])  # with the epoch's training-loss points
        self.history.append({"epoch": epoch, **values})
        if self.echo and self.is_main_process:
            print(_epoch_line(epoch, self.total_epochs, values, seconds if epoch else None), flush=True)
        for listener in self.listeners:
            listener(epoch, values)


def _divergence_fix(args) -> str:
    """What to change when the training loss runs off: the learning rate, and clipping when it is off."""
    fix = f"lower learning_rate (now {args.learning_rate:g})"
    if not args.max_grad_norm:  # unclipped, one large gradient is enough
        fix += " or clip gradients (max_grad_norm, now 0)"
    return fix


def _is_timing(key: str) -> bool:
    return key.endswith(("_runtime", "_samples_per_second", "_steps_per_second"))


def _epoch_line(epoch: int, total: int, values: dict[str, float], seconds: float | None) -> str:
    label = "before training" if epoch == 0 else f"epoch {epoch}/{total}"
    parts = [f"{k} {values[k]:.4f}" for k in CONSOLE_KEYS if k in values]
    timing = f"  ({seconds:.1f}s)" if seconds is not None else ""
    return f"  {label:<16} val " + "  ".join(parts) + timing


class EarlyStopping(TrainerCallback):
    """Stops training once the objective has not improved by more than `threshold` for `patience` epochs, and logs
    when and why (metric stopped_epoch, tag stop_reason). Unlike transformers' EarlyStoppingCallback it decides
    from the metrics callback's history, epochs 1 on as best-epoch selection does: a trial whose untrained scores
    are reused and a resumed run (its history rebuilt) stop where an uninterrupted run would. Add it after that
    callback: it reads the epoch that callback has just recorded."""

    def __init__(self, metrics: CaptionMetricsCallback, metric: str, greater_is_better: bool, patience: int,
                 threshold: float, echo: bool = True):
        assert patience >= 1, "patience 0 means no early stopping: do not add the callback"
        self.metrics, self.metric, self.greater_is_better = metrics, metric, greater_is_better
        self.patience, self.threshold, self.echo = patience, threshold, echo
        self.stopped_epoch: int | None = None
        self._seen = 0  # history entries already judged: other evaluations (the final test) add none

    def on_evaluate(self, args, state, control, **kwargs):
        history = self.metrics.history
        if len(history) == self._seen or self.stopped_epoch is not None:
            return
        self._seen = len(history)
        reason = self.reason(history)
        if reason is None:
            return
        control.should_training_stop = True
        self.stopped_epoch = int(history[-1]["epoch"])
        run = tracking.Run.active()
        if self.metrics.is_main_process and run:
            run.metrics({"stopped_epoch": self.stopped_epoch}, step=self.stopped_epoch)
            run.tags({"stop_reason": reason})
        if self.echo and self.metrics.is_main_process:
            print(f"  early stop after epoch {self.stopped_epoch}: {reason}", flush=True)

    def reason(self, history: list[dict[str, float]]) -> str | None:
        """Why training should stop now, or None: the last `patience` trained epochs improved on the best before
        them by no more than the threshold."""
        best, stale = None, 0
        for entry in sorted((h for h in history if h["epoch"] >= 1), key=lambda h: h["epoch"]):
            value = entry[self.metric]
            gain = None if best is None else (value - best[self.metric]) * (1 if self.greater_is_better else -1)
            if gain is None or gain > self.threshold:
                best, stale = entry, 0
            else:
                stale += 1
        if best is None or stale < self.patience:
            return None
        return (f"no improvement of {self.metric} > {self.threshold:g} for {stale} epoch(s) "
                f"(last improvement: {best[self.metric]:.4g} at epoch {int(best['epoch'])})")
