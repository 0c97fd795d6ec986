"""The paired pruner: a trial is pruned only when its per-image validation scores are significantly worse than the
best trial's at the same point of the schedule, on the same images.

The median rule (pruner.py) holds one number per trial to the median of others, however noisy that number is.
Optuna's WilcoxonPruner tests per-instance objectives, whose steps are the instances; a blipexp trial's steps are
epochs, and each epoch scores every image of the per-epoch validation set. So the test is across images:

- At epoch e of its E, a trial's best epoch so far is compared with the best complete trial's best epoch by the
  same point of its own E' epochs, floor(e/E * E'), as the median rule maps schedules (pruner.py).
- blipexp.evidence.paired tests the two on the same images (paired approximate randomization). The trial is pruned
  when p < alpha and it is the worse: in effect a one-sided test at alpha / 2, as `promote --require` reads p.
- The running trial's scores stay in the process that trains it (`record`). The best trial's are in the study (user
  attr REFERENCE, replaced under the study lock when a trial completes as the new best: `completed`), which every
  worker reads, from a journal file or PostgreSQL. Bounded: the objective's per-image values only (BLEU's
  statistics for a BLEU objective), at most MAX_IMAGES images, one list per epoch.

Nothing is pruned before a trial has completed, on fewer than evidence.MIN_IMAGES images, or when an epoch left an
image out (one that stopped decoding): then the two sets of images are not the same.
"""
from __future__ import annotations

import math

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from ..scoring import evidence
from ..scoring.metrics import ImageScores
from .pruner import best_epoch_by, epoch_at, scheduled_epochs

REFERENCE = "paired_pruner:best"  # the study's user attr holding the best trial's per-image scores
MAX_IMAGES = 512  # the images an epoch's stored scores hold at most (the first of the per-epoch set)
DIGITS = 4  # stored per-image values are rounded to this many decimals (CIDEr runs 0..10)


class PairedPruner(optuna.pruners.BasePruner):
    def __init__(self, default_epochs: int, metric: str, alpha: float, seed: int):
        """default_epochs: a trial's epochs when the sweep does not search them; metric: the objective (a caption
        metric: the loss has no per-image scores); alpha: the test's significance level; seed: its randomness."""
        self.default_epochs, self.metric, self.seed = default_epochs, metric, seed
        self.alpha = evidence.check_alpha(alpha)
        self.resamples = max(1000, math.ceil(20 / alpha))  # the smallest p, 1 / (R + 1), well below alpha
        self._running: dict[int, dict[int, list]] = {}  # trial number -> epoch -> its stored per-image values

    def record(self, number: int, epoch: int, scores: ImageScores | None) -> None:
        """Trial `number`'s per-image scores of `epoch` (None: an image was left out; that epoch is never tested)."""
        if scores is not None:
            values = scores.column(self.metric)[:MAX_IMAGES].round(DIGITS).tolist()
            self._running.setdefault(number, {})[epoch] = values

    def forget(self, number: int) -> None:
        """The trial ended: its scores go (`completed` took them first when it completed)."""
        self._running.pop(number, None)

    def completed(self, study: optuna.Study, number: int) -> None:
        """Trial `number` was just told COMPLETE (under the study lock): when it is now the best trial, its scores
        become the one every worker's trials are compared with."""
        epochs = self._running.pop(number, {})
        best = study.best_trial
        if best.number != number or not epochs:
            return
        study.set_user_attr(REFERENCE, {
            "trial": number, "epochs": scheduled_epochs(best, self.default_epochs),
            "values": {str(e): v for e, v in best.intermediate_values.items()},
            "scores": {str(e): values for e, values in epochs.items()}})

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        difference = self.difference(study, trial)
        if difference is None or not difference.significant(self.alpha):
            return False
        return difference.difference < 0 if study.direction == StudyDirection.MAXIMIZE else difference.difference > 0

    def difference(self, study: optuna.Study, trial: FrozenTrial) -> evidence.Difference | None:
        """The trial's best epoch so far against the best trial's best by the same point of its schedule (B - A:
        the trial minus the best), or None when there is nothing to compare yet."""
        reference, epoch = study.user_attrs.get(REFERENCE), trial.last_step
        if reference is None or epoch is None:
            return None
        maximize = study.direction == StudyDirection.MAXIMIZE
        own = best_epoch_by(trial.intermediate_values, epoch, maximize)
        point = epoch_at(epoch / scheduled_epochs(trial, self.default_epochs), reference["epochs"])
        theirs = best_epoch_by({int(e): v for e, v in reference["values"].items()}, point, maximize)
        mine, best = self._running.get(trial.number, {}).get(own), reference["scores"].get(str(theirs))
        if mine is None or best is None or len(mine) != len(best):
            return None
        return evidence.paired(ImageScores.of_column(self.metric, best), ImageScores.of_column(self.metric, mine),
                               self.resamples, self.seed, metrics=(self.metric,))[self.metric]
