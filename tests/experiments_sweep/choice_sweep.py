"""Hypothesis: a search space of strings and booleans sweeps, prints, tags and summarises as numbers do."""
from blipexp import Choice

from .small_sweep import SmallSweep


class ChoiceSweep(SmallSweep):
    pitch_scenes = 30
    epochs = 1
    n_trials = 2
    test_fraction = 0.0
    max_new_tokens = 6
    registered_model = "choice-sweep"

    def search_space(self):
        return {"lr_scheduler": Choice(("linear", "cosine")), "freeze_vision_encoder": Choice((True, False))}
