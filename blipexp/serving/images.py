"""The images a request carries: the values of its DataFrame, Series or list, each decoded to an RGB image or
refused with its row's reason.

Served, the model reads no file the client names: text is base64, never a path, so a remote client can neither
read nor probe the server's disk. Only an operator can allow a folder (BLIPEXP_SERVE_IMAGE_ROOT); a path outside
it is refused with the same answer as a missing file. In-process code reads local files by passing
`pathlib.Path` objects, which no request can carry (JSON, CSV and Parquet bodies hold text and bytes);
`caption` reads its files itself and sends bytes. Images are bounded in bytes and pixels (decompression bombs).
Images are decoded by the training code (`data.images.load_rgb`), so served images are prepared as in training.
"""
from __future__ import annotations

import base64
import binascii
import io
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from .serve_settings import BadRequest

IMAGE_ROOT_VARIABLE = "BLIPEXP_SERVE_IMAGE_ROOT"  # a folder whose image files requests may name; unset: none
MAX_IMAGE_BYTES = 20 * 2**20  # per image, encoded; base64 text may be 4/3 of it
MAX_IMAGE_PIXELS = 4096 * 4096  # per image: 50 MB decoded; a batch_size of them is decoded at a time


def image_values(model_input: Any) -> list[Any]:
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
    from ..data.images import BadImage, load_rgb

    try:
        data = _image_bytes(value, row, root)
        _check_pixels(data, row)
        return load_rgb(data)
    except BadImage as exc:
        raise ValueError(f"row {row}: the data is not a readable image ({exc.reason}); "
                         "pass PNG/JPEG bytes or their base64 text") from exc


def _image_bytes(value: Any, row: int, root: Path | None = None) -> bytes:
    from ..data.images import read_image_file

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
