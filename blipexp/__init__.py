"""blipexp: experiment-tracked fine-tuning of BLIP image-captioning models."""

__version__ = "0.1.0"
