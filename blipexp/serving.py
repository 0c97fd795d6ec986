"""Using a registered model: its pyfunc (what `mlflow models serve` and promote's check run), `caption` and
`export` (a folder `from_pretrained` loads).

MLflow's transformers flavor cannot pyfunc-serve BLIP, hence this small `BlipCaptioner` wrapper: a DataFrame
with an `image` column (image bytes, base64 strings or file paths) in, a DataFrame with a `caption` column out.
Generation settings (max_new_tokens, num_beams, batch_size) travel as a small `generation.json` artifact
(not as pyfunc `model_config`, which MLflow would also log as run params, clashing with the trial's own
`max_new_tokens` param); per-call `params` override them, e.g. `predict(df, params={"num_beams": 3})`.
Images are decoded by the training code (`data.images.load_rgb`), so served images are prepared as in training.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

ARTIFACT_KEY = "model"  # the HF folder's key in `artifacts`, and the logged model's name in the run
GENERATION_KEY = "generation"  # the generation.json artifact
DEFAULT_GENERATION = {"max_new_tokens": 30, "num_beams": 1, "batch_size": 16}


class BlipCaptioner(mlflow.pyfunc.PythonModel):
    """Captions images with a BLIP model saved by save_pretrained (logged as artifact "model")."""

    def load_context(self, context) -> None:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        folder = context.artifacts[ARTIFACT_KEY]
        # transformers fills tensors missing from the weights file with random values and only warns: refuse
        self.model, info = BlipForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
        if info["missing_keys"]:
            missing = sorted(info["missing_keys"])
            raise ValueError(f"the weights file in {folder} lacks {len(missing)} of the model's tensors (e.g. "
                             f"{missing[0]}): it is damaged or incomplete")
        self.model.eval()
        self.processor = BlipProcessor.from_pretrained(folder)
        stored = json.loads(Path(context.artifacts[GENERATION_KEY]).read_text()) \
            if GENERATION_KEY in context.artifacts else {}
        self.generation = {**DEFAULT_GENERATION, **stored}

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        settings = {**self.generation, **{k: v for k, v in (params or {}).items() if v is not None}}
        images = [load_image(value, row) for row, value in enumerate(_image_values(model_input))]
        batch_size = int(settings["batch_size"])
        captions: list[str] = []
        for start in range(0, len(images), batch_size):
            captions += self._generate(images[start:start + batch_size], settings)
        return pd.DataFrame({"caption": captions})

    def _generate(self, images: list, settings: dict[str, Any]) -> list[str]:
        import torch

        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.model.device)
        with torch.no_grad():
            ids = self.model.generate(pixel_values=pixels, max_new_tokens=int(settings["max_new_tokens"]),
                                      num_beams=int(settings["num_beams"]))
        return [text.strip() for text in self.processor.batch_decode(ids, skip_special_tokens=True)]


def _image_values(model_input: Any) -> list[Any]:
    """The image values of a DataFrame (`image` column, else its only column), a Series or a list."""
    if isinstance(model_input, pd.DataFrame):
        if "image" in model_input.columns:
            return list(model_input["image"])
        if len(model_input.columns) == 1:
            return list(model_input.iloc[:, 0])
        raise ValueError(f"input DataFrame has columns {list(model_input.columns)}: "
                         "pass one column named 'image' (image bytes, base64 strings or file paths)")
    if isinstance(model_input, pd.Series):
        return list(model_input)
    if isinstance(model_input, (list, tuple)):
        return list(model_input)
    if isinstance(model_input, (str, bytes)):
        return [model_input]
    raise ValueError(f"input of type {type(model_input).__name__} is not supported: pass a DataFrame with an "
                     "'image' column, a Series or a list of image bytes, base64 strings or file paths")


def load_image(value: Any, row: int = 0):
    """An RGB PIL image from bytes, a base64 string (optionally a data: URL) or a file path.

    Decoded by the same code as training data (EXIF orientation, transparency on white, 16-bit scaled), so the
    served model sees images prepared exactly as in training.
    """
    from .data.images import BadImage, load_rgb

    try:
        return load_rgb(_image_bytes(value, row))
    except BadImage as exc:
        raise ValueError(f"row {row}: the data is not a readable image ({exc.reason}); "
                         "pass PNG/JPEG bytes, their base64 text, or a path to an image file") from exc


def _image_bytes(value: Any, row: int) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"row {row}: expected image bytes, a base64 string or a file path, "
                         f"got {type(value).__name__} {str(value)[:40]!r}")
    text = value.strip()
    if len(text) < 4096 and Path(text).expanduser().is_file():
        return Path(text).expanduser().read_bytes()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"row {row}: {value[:60]!r} is neither an existing file nor base64 image data; "
                         "check the path or encode the image with base64") from None


def signature(generation: dict[str, Any] | None = None) -> ModelSignature:
    """Input: an `image` string column (base64 or path); output: a `caption` string column; generation params."""
    settings = {**DEFAULT_GENERATION, **(generation or {})}
    return ModelSignature(
        inputs=Schema([ColSpec("string", "image")]),
        outputs=Schema([ColSpec("string", "caption")]),
        params=ParamSchema([ParamSpec(key, "long", int(settings[key])) for key in DEFAULT_GENERATION]),
    )


def example_image_base64(size: int = 32) -> str:
    """A small generated PNG (green pitch, white ball) as base64: the logged input example."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (40, 140, 60))
    ImageDraw.Draw(image).ellipse((size // 3, size // 3, size // 2, size // 2), fill=(250, 250, 250))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# --------------------------------------------------------------------------- using a registered model

def caption(model_uri: str, images: list[str]) -> list[str]:
    """Captions for image files, from e.g. `models:/blip-captioner@champion` or `models:/blip-captioner/3`."""
    missing = [path for path in images if not Path(path).expanduser().is_file()]
    if missing:
        raise ValueError(f"no such image file(s): {', '.join(map(str, missing))}")
    model = _load(model_uri)
    frame = pd.DataFrame({"image": [str(Path(p).expanduser()) for p in images]})
    return [str(text) for text in model.predict(frame)["caption"]]


def export(model_uri: str, out_dir: Path, push_to_hub: str | None = None) -> Path:
    """Copy the logged model's HF folder (model + processor) to out_dir; optionally push it to the Hub repo."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty: choose a new folder or empty it first")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        except MlflowException as exc:
            raise ValueError(f"cannot download {model_uri} ({exc.message}): check the name, version or alias "
                             "with list_models()") from exc
        shutil.copytree(_hf_folder(local, model_uri), out_dir, dirs_exist_ok=True)
    if push_to_hub:
        _push(out_dir, push_to_hub)
    return out_dir


def _hf_folder(local: Path, model_uri: str) -> Path:
    """The HF folder inside a downloaded pyfunc model, as its MLmodel file records it."""
    flavor = Model.load(str(local / "MLmodel")).flavors.get("python_function", {})
    entry = (flavor.get("artifacts") or {}).get(ARTIFACT_KEY)
    if not entry:
        raise ValueError(f"{model_uri} is not a BlipCaptioner model (no '{ARTIFACT_KEY}' artifact): "
                         "register it with log_and_register")
    return local / entry["path"]


def _push(folder: Path, repo: str) -> None:
    """Upload model and processor to the Hugging Face Hub repo (needs network and a token: `hf auth login`)."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    BlipForConditionalGeneration.from_pretrained(folder).push_to_hub(repo)
    BlipProcessor.from_pretrained(folder).push_to_hub(repo)


def _load(model_uri: str):
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise ValueError(f"cannot load {model_uri} ({exc.message}): check the name, version or alias "
                         "with list_models()") from exc
