"""A registered model answering requests: the served pyfunc BlipCaptioner (captioner.py; pyfunc_model.py is the
file MLflow logs to load it), the images a request carries (images.py), batched generation (batcher.py), the
operator's settings (serve_settings.py), and using a version outside a server: `caption`, `export` (use.py).
Versions registered by earlier blipexp load through `from blipexp.serving import BlipCaptioner`.
Imports runtime, experiment, data, model, tracking."""
from .captioner import (
    ARTIFACT_KEY,
    CARD_KEY,
    DEFAULT_GENERATION,
    GENERATION_KEY,
    BlipCaptioner,
    example_image_base64,
    signature,
)
from .images import IMAGE_ROOT_VARIABLE, MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, image_root, load_image
from .use import caption, export, hf_folder

__all__ = ["ARTIFACT_KEY", "CARD_KEY", "DEFAULT_GENERATION", "GENERATION_KEY", "IMAGE_ROOT_VARIABLE", "MAX_IMAGE_BYTES",
           "MAX_IMAGE_PIXELS", "BlipCaptioner", "caption", "example_image_base64", "export", "hf_folder", "image_root",
           "load_image", "signature"]
