"""Decode one image, from bytes or a path, into a fully loaded RGB picture, or say why it is unusable.

Every image the trainer sees passes through `load_rgb`, so corrupt files are caught once, up front, with a
reason that can be counted (`BadImage.reason`), instead of crashing a DataLoader worker mid-epoch.

Pillow's decompression-bomb guard stays on: an image above `Image.MAX_IMAGE_PIXELS` is refused as
"too_large". `ImageFile.LOAD_TRUNCATED_IMAGES` is never touched, so truncated files fail here.
"""
from __future__ import annotations

import io
import os
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

REASONS = ("zero_byte", "not_an_image", "truncated", "too_large", "unreadable", "missing_file")

# What Pillow raises for a damaged file, besides OSError: broken chunks (SyntaxError), bad headers
# (struct.error, IndexError), unsupported mode conversions (ValueError).
_DECODE_ERRORS = (SyntaxError, ValueError, struct.error, IndexError, TypeError, EOFError)
# What a malformed EXIF block raises in exif_transpose; the picture itself is still usable.
_EXIF_ERRORS = (SyntaxError, ValueError, struct.error, IndexError, TypeError, KeyError, OSError)


class BadImage(ValueError):
    """An image that cannot be used; `reason` is one of `REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def load_rgb(source: bytes | str | os.PathLike) -> Image.Image:
    """Open `source` (encoded bytes or a file path), apply EXIF orientation and return a loaded RGB image.

    Raises BadImage with a reason for empty, missing, non-image, truncated, oversized or undecodable input.
    """
    data = source if isinstance(source, (bytes, bytearray, memoryview)) else read_image_file(source)
    if len(data) == 0:
        raise BadImage("zero_byte")
    image = _decode(bytes(data))
    return to_rgb(_apply_exif_orientation(image))


def check_decodes(data: bytes) -> None:
    """Raise BadImage as `load_rgb` would, faster: JPEGs decode at reduced scale (every byte is still read, so
    truncation still surfaces). For the first look at a dataset, where the pixels themselves are not kept."""
    if len(data) == 0:
        raise BadImage("zero_byte")
    to_rgb(_decode(bytes(data), draft=(64, 64)))


def read_image_file(path: str | os.PathLike) -> bytes:
    """The raw bytes of an image file; a missing file is BadImage("missing_file")."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise BadImage("missing_file", os.fspath(path)) from None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise BadImage("unreadable", f"{os.fspath(path)}: {exc}") from None


def _decode(data: bytes, draft: tuple[int, int] | None = None) -> Image.Image:
    """Parse the header and decode every pixel, so truncation surfaces now and not in a worker later."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; such an image is still too big to train on.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if draft is not None:
                image.draft("RGB", draft)  # JPEG only: decode at 1/2..1/8 scale; a no-op for other formats
            image.load()
        return image
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImage("too_large", str(exc)) from None
    except UnidentifiedImageError:
        raise BadImage("not_an_image") from None
    except EOFError as exc:
        raise BadImage("truncated", str(exc)) from None
    except OSError as exc:
        # Pillow says "image file is truncated (...)" or "Truncated File Read" when bytes run out.
        reason = "truncated" if "truncated" in str(exc).lower() else "unreadable"
        raise BadImage(reason, str(exc)) from None
    except _DECODE_ERRORS as exc:
        raise BadImage("unreadable", f"{type(exc).__name__}: {exc}") from None


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF orientation tag says (phone photos are stored sideways)."""
    try:
        return ImageOps.exif_transpose(image)
    except _EXIF_ERRORS:
        return image  # a broken EXIF block should not cost us an otherwise good picture


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: transparency onto white, 16-bit and float scaled (not clipped) to 8-bit."""
    try:
        if image.mode == "RGB" and not image.has_transparency_data:
            return image
        if image.has_transparency_data:  # RGBA, LA, PA, P or L/RGB with a tRNS colour
            return _composite_on_white(image)
        if image.mode.startswith("I") or image.mode == "F":
            return Image.fromarray(_to_uint8(image), "L").convert("RGB")
        return image.convert("RGB")  # CMYK, L, 1, P, YCbCr, LAB, HSV, RGBX
    except _DECODE_ERRORS as exc:  # e.g. a mode Pillow cannot convert
        raise BadImage("unreadable", f"cannot convert mode {image.mode} to RGB: {exc}") from None


def _composite_on_white(image: Image.Image) -> Image.Image:
    # A transparent background is usually meant to be the page; black (the raw RGB under alpha 0) would not be.
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _to_uint8(image: Image.Image) -> np.ndarray:
    """Scale a 16/32-bit integer or float image to 0..255 (Pillow's own convert("L") clips 16-bit to 255)."""
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.max() <= 1.0:  # floats in 0..1, the common convention
            values = values * 255.0
    else:  # "I;16*" and "I" (which Pillow uses for 16-bit TIFF/PNG data): full range is 0..65535
        values = values / 257.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


# --- thumbnails: the pictures of the tables a run logs and of a comparison's page

THUMBNAIL_PX = 128  # a table's picture is at most this many pixels a side
THUMBNAIL_QUALITY = 90  # JPEG: a tenth of PNG's encoding time on a 128 px scene, no visible loss at that size


def thumbnail(image: Image.Image) -> Image.Image:
    """`image` shrunk to at most THUMBNAIL_PX a side (its aspect kept; never enlarged), in RGB."""
    small = to_rgb(image)
    if max(small.size) > THUMBNAIL_PX:
        small = small.copy() if small is image else small
        small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    return small


def thumbnail_jpeg(image: Image.Image) -> bytes:
    """`image`'s thumbnail as JPEG bytes."""
    buffer = io.BytesIO()
    thumbnail(image).save(buffer, "JPEG", quality=THUMBNAIL_QUALITY)
    return buffer.getvalue()
