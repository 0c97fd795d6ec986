"""The model: loading and adapting BLIP (LoRA, a frozen encoder and its cached features), the tiny offline preset
and its pretraining, the precision it trains in, how it generates captions. Imports runtime, experiment, data."""
