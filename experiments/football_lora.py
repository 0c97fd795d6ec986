"""Hypothesis: LoRA adapters on the text decoder's attention (rank 4 to 16, under 2% of BLIP-base's weights trainable) reach the full fine-tune's validation CIDEr on the football photos, at a higher learning rate.

The vision encoder carries no adapters, so it is frozen and its features are cached: every epoch trains the
adapters on the stored encoder outputs. The sweep searches the rank and the learning rate (LoRA's updates start
at zero and want larger steps than full fine-tuning's); the merged model is registered, the adapter beside it.
"""
from blipexp import Choice, FloatRange

from .football_lr_sweep import FootballLrSweep


class FootballLora(FootballLrSweep):
    adapter = "lora"
    lora_targets = "decoder"
    freeze_vision_encoder = True  # no adapters there: its features are computed once (cache_vision_features)
    epochs = 10
    n_trials = 8
    registered_model = "blip-football-lora"

    def search_space(self):
        low, high = (1e-3, 3e-2) if self.is_tiny else (1e-5, 1e-3)
        return {"lora_r": Choice((4, 8, 16)), "learning_rate": FloatRange(low, high, log=True)}
