"""Hypothesis: the best validation CIDEr comes from a learning rate other than the notebook's 5e-5 and from fewer epochs than it ran.

The notebook's learning rate was never compared with anything. Optuna's TPE sampler searches a log-scale
learning rate and the epoch count; pruning stops hopeless settings after an epoch or two.
"""
from blipexp import FloatRange, IntRange

from .football_baseline import FootballBaseline


class FootballLrSweep(FootballBaseline):
    n_trials = 8

    def search_space(self):
        # the tiny preset is pretrained too, but 1/1000 of BLIP-base's size: it takes larger steps. Its range is where
        # it learns (pitch set, BENCHMARKS.md): every trial below 7e-5 ended at the untrained score within 12 epochs,
        # and the best trials fell at 1e-3..3e-3 with the encoder frozen or not, so one range serves both
        low, high = (1e-4, 1e-2) if self.is_tiny else (1e-6, 1e-3)
        return {
            "learning_rate": FloatRange(low, high, log=True),
            "epochs": IntRange(2, 12) if self.is_tiny else IntRange(2, 20),
        }
