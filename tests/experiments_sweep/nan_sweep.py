"""Hypothesis: a learning rate of 1e30 without gradient clipping blows the weights up to NaN; the sweep
fails that trial with the reason, goes on with the others, and never registers it."""
from blipexp import Choice

from .small_sweep import SmallSweep


class NanSweep(SmallSweep):
    epochs = 1
    max_grad_norm = 0.0  # no clipping: the absurd step goes through
    n_trials = 2
    registered_model = "nan-sweep"

    def search_space(self):
        return {"learning_rate": Choice((1e30, 3e-3, 2e-3))}
