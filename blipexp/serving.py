"""Using a registered model: its pyfunc (what `mlflow models serve` and promote's check run), `caption` and
`export` (a folder `from_pretrained` loads).

MLflow's transformers flavor cannot pyfunc-serve BLIP, hence this small `BlipCaptioner` wrapper: a DataFrame
with an `image` column (image bytes or base64 strings) in, a DataFrame with `caption` and `error` columns out,
one row per image: a bad image gets its `error` (and a null caption) instead of failing the whole batch.

Served, the model reads no file the client names: text is base64, never a path, so a remote client can neither
read nor probe the server's disk. Only an operator can allow a folder (BLIPEXP_SERVE_IMAGE_ROOT); a path outside
it is refused with the same answer as a missing file. In-process code reads local files by passing
`pathlib.Path` objects, which no request can carry (JSON, CSV and Parquet bodies hold text and bytes);
`caption` reads its files itself and sends bytes. Images are bounded in bytes and pixels (decompression bombs).

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
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

ARTIFACT_KEY = "model"  # the HF folder's key in `artifacts`, and the logged model's name in the run
GENERATION_KEY = "generation"  # the generation.json artifact
DEFAULT_GENERATION = {"max_new_tokens": 30, "num_beams": 1, "batch_size": 16}
IMAGE_ROOT_VARIABLE = "BLIPEXP_SERVE_IMAGE_ROOT"  # a folder whose image files requests may name; unset: none
MAX_IMAGE_BYTES = 20 * 2**20  # per image, encoded; base64 text may be 4/3 of it
MAX_IMAGE_PIXELS = 4096 * 4096  # per image: 50 MB decoded; a batch_size of them is decoded at a time


class BadRequest(MlflowException, ValueError):
    """A request malformed as a whole: a ValueError in-process, a 400 with this message (no stack trace) served."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


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
        self.image_root = image_root()

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per image: `caption` (null if the image is bad) and `error` (null if it is fine)."""
        settings = {**self.generation, **{k: v for k, v in (params or {}).items() if v is not None}}
        values = _image_values(model_input)
        captions: list[str | None] = [None] * len(values)
        errors: list[str | None] = [None] * len(values)
        batch_size = int(settings["batch_size"])
        for start in range(0, len(values), batch_size):  # decoded images held: one batch at a time
            images = {}
            for row in range(start, min(start + batch_size, len(values))):
                try:
                    images[row] = load_image(values[row], row, root=self.image_root)
                except ValueError as exc:
                    errors[row] = str(exc)
            if images:
                for row, text in zip(images, self._generate(list(images.values()), settings)):
                    captions[row] = text
        # object dtype: a missing value stays None (JSON null), not NaN
        return pd.DataFrame({"caption": captions, "error": errors}, dtype=object)

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
        raise BadRequest(f"input DataFrame has columns {list(model_input.columns)}: "
                         "pass one column named 'image' (image bytes or base64 strings)")
    if isinstance(model_input, pd.Series):
        return list(model_input)
    if isinstance(model_input, (list, tuple)):
        return list(model_input)
    if isinstance(model_input, (str, bytes, os.PathLike)):
        return [model_input]
    raise BadRequest(f"input of type {type(model_input).__name__} is not supported: pass a DataFrame with an "
                     "'image' column, a Series or a list of image bytes or base64 strings")


def load_image(value: Any, row: int = 0, root: Path | None = None):
    """An RGB PIL image from bytes, a base64 string (optionally a data: URL) or a `pathlib.Path` (in-process).

    A string is a file path only if `root` (the operator's BLIPEXP_SERVE_IMAGE_ROOT) is given and the file lies
    inside it. Decoded by the same code as training data (EXIF orientation, transparency on white, 16-bit
    scaled), so the served model sees images prepared exactly as in training.
    """
    from .data.images import BadImage, load_rgb

    try:
        data = _image_bytes(value, row, root)
        _check_pixels(data, row)
        return load_rgb(data)
    except BadImage as exc:
        raise ValueError(f"row {row}: the data is not a readable image ({exc.reason}); "
                         "pass PNG/JPEG bytes or their base64 text") from exc


def _image_bytes(value: Any, row: int, root: Path | None = None) -> bytes:
    from .data.images import read_image_file

    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, os.PathLike):  # only in-process code builds these: a request holds text and bytes
        data = read_image_file(value)
    elif isinstance(value, str) and value.strip():
        data = _text_bytes(value.strip(), row, root)
    else:
        raise ValueError(f"row {row}: expected image bytes or a base64 string, got {type(value).__name__}")
    if len(data) > MAX_IMAGE_BYTES:
        raise _too_big(row)
    return data


def _text_bytes(text: str, row: int, root: Path | None) -> bytes:
    """Base64 (or a data: URL), or a file inside `root`. Every other text gets one answer, whatever the disk
    holds: the message depends on nothing but the text, so it cannot tell which server files exist."""
    file = _file_under(root, text) if root is not None and len(text) < 4096 else None
    if file is not None:
        if file.stat().st_size > MAX_IMAGE_BYTES:  # checked before reading: the folder may hold anything
            raise _too_big(row)
        return file.read_bytes()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    if len(text) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise _too_big(row)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"row {row}: not base64 image data, and file paths are not read here: send the image's "
                         "bytes or base64 text (in-process, pass a pathlib.Path to read a local file)") from None


def _file_under(root: Path, text: str) -> Path | None:
    """The file `text` names (relative to root, or absolute) if, with symlinks and `..` resolved, it is inside root."""
    try:
        candidate = (root / text).resolve()
        return candidate if candidate.is_relative_to(root) and candidate.is_file() else None
    except (OSError, ValueError, RuntimeError):  # a name too long, a NUL byte, a symlink loop: not an allowed file
        return None


def _check_pixels(data: bytes, row: int) -> None:
    """Refuse an image above MAX_IMAGE_PIXELS from its header, before decoding: a small file can hold a huge image."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                pixels = image.width * image.height
    except Image.DecompressionBombError:  # above twice Pillow's own limit, itself above ours
        pixels = MAX_IMAGE_PIXELS + 1
    except Exception:  # not an image, or a damaged header: load_rgb names the reason
        return
    if pixels > MAX_IMAGE_PIXELS:
        side = int(MAX_IMAGE_PIXELS ** 0.5)
        raise ValueError(f"row {row}: the image has more than {MAX_IMAGE_PIXELS:,} pixels ({side}x{side}): "
                         "downscale it before sending")


def _too_big(row: int) -> ValueError:
    return ValueError(f"row {row}: the image is larger than {MAX_IMAGE_BYTES // 2**20} MiB: downscale or compress "
                      "it before sending")


def image_root() -> Path | None:
    """The folder named by BLIPEXP_SERVE_IMAGE_ROOT (resolved), or None: then no path sent as text is read."""
    raw = os.environ.get(IMAGE_ROOT_VARIABLE, "").strip()
    if not raw:
        return None
    root = Path(raw).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"{IMAGE_ROOT_VARIABLE}={raw} is not a folder: set it to the folder whose images "
                         "clients may name, or unset it to accept image bytes and base64 only")
    return root


def signature(generation: dict[str, Any] | None = None) -> ModelSignature:
    """Input: an `image` string column (base64); output: `caption` and `error` string columns; generation params."""
    settings = {**DEFAULT_GENERATION, **(generation or {})}
    return ModelSignature(
        inputs=Schema([ColSpec("string", "image")]),
        outputs=Schema([ColSpec("string", "caption", required=False), ColSpec("string", "error", required=False)]),
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
    """Captions for image files, from e.g. `models:/blip-captioner@champion` or `models:/blip-captioner/3`.

    The files are read here, as a client would, and sent as bytes: the model itself reads no paths."""
    missing = [path for path in images if not Path(path).expanduser().is_file()]
    if missing:
        raise ValueError(f"no such image file(s): {', '.join(map(str, missing))}")
    model = _load(model_uri)
    frame = pd.DataFrame({"image": [Path(p).expanduser().read_bytes() for p in images]})
    out = model.predict(frame)
    bad = [f"{path}: {error}" for path, error in zip(images, out["error"]) if error is not None]
    if bad:
        raise ValueError("cannot caption " + "; ".join(bad))
    return [str(text) for text in out["caption"]]


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
