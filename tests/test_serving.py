"""The registered model's pyfunc pieces that need no registered model: its input example, image decoding."""
import base64
import io

import pytest

from blipexp import serving


def test_input_example_is_a_base64_png():
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(serving.example_image_base64())))
    assert image.format == "PNG"


def test_served_images_are_prepared_like_training_images():
    """RGBA goes on white (as in training), not on black as a plain convert("RGB") would do."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(buffer, format="PNG")
    assert serving.load_image(buffer.getvalue()).getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ValueError, match="row 3: the data is not a readable image"):
        serving.load_image(b"not an image", row=3)


# --------------------------------------------------------------------------- what the model reads

def png_bytes(size=(8, 8), mode="RGB") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def files(tmp_path):
    """Same-length names: an image, a text file and a missing file, inside `inside/` and in a sibling folder."""
    for folder in ("inside", "outside"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.png").write_bytes(png_bytes())
        (tmp_path / folder / "t.png").write_text("root:x:0:0:root:/root:/bin/bash\n")
    return tmp_path


def refusal(value, root=None) -> str:
    with pytest.raises(ValueError) as refused:
        serving.load_image(value, row=0, root=root)
    return str(refused.value)


def test_text_is_never_read_as_a_path_so_existing_and_missing_files_get_one_answer(files):
    """Before: an existing image path was opened on the server and a text file gave a different error."""
    answers = {refusal(str(files / "outside" / name)) for name in ("a.png", "t.png", "m.png")}
    assert len(answers) == 1, answers
    answer = answers.pop()
    assert "file paths are not read" in answer and "a.png" not in answer and str(files) not in answer


def test_the_image_root_allows_its_files_and_refuses_others_like_missing_ones(files):
    root = (files / "inside").resolve()
    assert serving.load_image("a.png", root=root).size == (8, 8)
    assert serving.load_image(str(root / "a.png"), root=root).size == (8, 8)
    (root / "link.png").symlink_to(files / "outside" / "a.png")
    missing = refusal("m.png", root)
    for escape in (str(files / "outside" / "a.png"), str(files / "outside" / "t.png"), "../outside/a.png",
                   "link.png", str(files / "outside" / "m.png")):
        assert refusal(escape, root) == missing, escape


def test_the_image_root_comes_from_the_environment_and_must_be_a_folder(files, monkeypatch):
    monkeypatch.delenv(serving.IMAGE_ROOT_VARIABLE, raising=False)
    assert serving.image_root() is None
    monkeypatch.setenv(serving.IMAGE_ROOT_VARIABLE, str(files / "inside" / ".." / "inside"))
    assert serving.image_root() == (files / "inside").resolve()
    monkeypatch.setenv(serving.IMAGE_ROOT_VARIABLE, str(files / "inside" / "a.png"))
    with pytest.raises(ValueError, match="BLIPEXP_SERVE_IMAGE_ROOT=.* is not a folder"):
        serving.image_root()


def test_in_process_code_reads_local_files_as_pathlib_paths(files):
    assert serving.load_image(files / "outside" / "a.png").size == (8, 8)
    with pytest.raises(ValueError, match="missing_file"):
        serving.load_image(files / "outside" / "m.png")


def test_images_are_bounded_in_bytes_and_pixels():
    too_many_bytes = png_bytes() + b"\0" * serving.MAX_IMAGE_BYTES
    with pytest.raises(ValueError, match="row 2: the image is larger than 20 MiB"):
        serving.load_image(too_many_bytes, row=2)
    with pytest.raises(ValueError, match="larger than 20 MiB"):
        serving.load_image(base64.b64encode(too_many_bytes).decode())
    bomb = png_bytes((5000, 5000), mode="1")  # 25 M pixels in a few KB
    assert len(bomb) < 100_000
    with pytest.raises(ValueError, match="more than 16,777,216 pixels .*downscale"):
        serving.load_image(bomb)
    assert serving.load_image(png_bytes((4096, 10), mode="1")).size == (4096, 10)
