"""A registered model answering requests: the served pyfunc BlipCaptioner (captioner.py; pyfunc_model.py is the
file MLflow logs to load it), its batched generation (batcher.py) and the operator's settings (serve_settings.py),
`caption` and `export`. Versions registered by earlier blipexp load through `from blipexp.serving import
BlipCaptioner`. Imports runtime, experiment, data, model, tracking."""
from .captioner import (
    ARTIFACT_KEY,
    CARD_KEY,
    DEFAULT_GENERATION,
    GENERATION_KEY,
    IMAGE_ROOT_VARIABLE,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    SERVER_MODEL_PATH_VARIABLE,
    BlipCaptioner,
    caption,
    example_image_base64,
    export,
    hf_folder,
    image_root,
    load_image,
    signature,
)

__all__ = ["ARTIFACT_KEY", "CARD_KEY", "DEFAULT_GENERATION", "GENERATION_KEY", "IMAGE_ROOT_VARIABLE", "MAX_IMAGE_BYTES",
           "MAX_IMAGE_PIXELS", "SERVER_MODEL_PATH_VARIABLE", "BlipCaptioner", "caption", "example_image_base64",
           "export", "hf_folder", "image_root", "load_image", "signature"]
