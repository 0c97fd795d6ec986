"""Hypothesis: a test sweep small enough for the suite still prunes and resumes."""
from blipexp import Choice, ExperimentSpec


class SmallSweep(ExperimentSpec):
    model = "tiny"
    dataset = "pitch"
    pitch_scenes = 60
    epochs = 3
    train_batch_size = 4  # ~10 steps an epoch: the pretrained start must be beaten at epoch 1 for pruning to show
    learning_rate = 2e-3
    sample_captions = 2
    n_trials = 4
    registered_model = "small-sweep"

    def search_space(self):
        return {"learning_rate": Choice((3e-3, 2e-3, 1e-3, 1e-7))}
