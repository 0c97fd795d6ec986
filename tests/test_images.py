"""load_rgb: every Pillow mode becomes RGB, EXIF orientation applies, and broken files fail with a reason."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from blipexp.data.images import BadImage, load_rgb


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(size: tuple[int, int] = (128, 128)) -> Image.Image:
    """Random pixels: they do not compress, so cutting the file in half cuts into the pixel data."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: Pillow's size check happens on the header alone."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def reason_of(source) -> str:
    with pytest.raises(BadImage) as caught:
        load_rgb(source)
    return caught.value.reason


# --- modes


def test_cmyk_becomes_rgb():
    image = load_rgb(encode(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG", quality=95))
    assert image.mode == "RGB"
    red, green, blue = image.getpixel((1, 1))
    assert red > 200 and green < 60 and blue < 60


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (2, 1))
    image.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black: must come out white, not black
    image.putpixel((1, 0), (255, 0, 0, 255))
    out = load_rgb(encode(image, "PNG"))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (255, 0, 0)


def test_la_is_composited_on_white():
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (0, 0))
    image.putpixel((1, 0), (0, 255))
    out = load_rgb(encode(image, "PNG"))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (0, 0, 0)


def test_l_and_1_become_rgb():
    assert load_rgb(encode(Image.new("L", (2, 2), 100), "PNG")).getpixel((0, 0)) == (100, 100, 100)
    bilevel = load_rgb(encode(Image.new("1", (2, 2), 1), "PNG"))
    assert bilevel.mode == "RGB" and bilevel.getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency_is_composited_on_white():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 black, index 1 blue
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    out = load_rgb(encode(image, "PNG", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (0, 0, 255)


def test_16_bit_gray_is_scaled_not_clipped():
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"  # the mode a 16-bit grayscale PNG opens in
    out = load_rgb(data)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (0, 0, 0)
    assert out.getpixel((1, 0))[0] in (127, 128)  # mid-gray stays mid-gray (Pillow's convert gives 255)
    assert out.getpixel((2, 0)) == (255, 255, 255)


def test_32_bit_int_and_float_images():
    as_int = Image.fromarray(np.array([[0, 32768]], dtype=np.int32))
    assert load_rgb(encode(as_int, "TIFF")).getpixel((1, 0))[0] in (127, 128)
    as_float = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    out = load_rgb(encode(as_float, "TIFF"))
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "red")
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone photo held upright
    out = load_rgb(encode(image, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


# --- inputs


def test_bytes_str_and_path_inputs(tmp_path: Path):
    data = encode(Image.new("RGB", (3, 2), "blue"), "PNG")
    file = tmp_path / "blue.png"
    file.write_bytes(data)
    for source in (data, str(file), file):
        out = load_rgb(source)
        assert out.size == (3, 2) and out.getpixel((0, 0)) == (0, 0, 255)


# --- bad files


def test_zero_byte_file(tmp_path: Path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert reason_of(empty) == "zero_byte"
    assert reason_of(b"") == "zero_byte"


def test_text_file_renamed_png(tmp_path: Path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is a text file, not a picture\n")
    assert reason_of(fake) == "not_an_image"


def test_missing_file(tmp_path: Path):
    assert reason_of(tmp_path / "nope.jpg") == "missing_file"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(fmt: str):
    data = encode(noise(), fmt)
    assert reason_of(data[: len(data) // 2]) == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("size", [(20000, 10000), (10000, 10000)])
def test_decompression_bomb_is_too_large(size: tuple[int, int]):
    # 200 Mpx is above Pillow's error limit (2 x MAX_IMAGE_PIXELS); 100 Mpx is in its warning band.
    limit = Image.MAX_IMAGE_PIXELS
    assert size[0] * size[1] > limit
    assert reason_of(png_header_only(*size)) == "too_large"
    assert Image.MAX_IMAGE_PIXELS == limit  # the guard stays on, unchanged


def test_bad_image_is_a_value_error_with_reason():
    with pytest.raises(ValueError, match="not_an_image"):
        load_rgb(b"definitely not an image")
