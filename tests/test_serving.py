"""The registered model's pyfunc pieces that need no registered model: its input example, image decoding."""
import base64
import io
import json

import pytest

from blipexp import serving


def test_input_example_is_a_base64_png():
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(serving.example_image_base64())))
    assert image.format == "PNG"


def test_the_signature_declares_a_caption_and_an_error_per_row():
    outputs = serving.signature().outputs
    assert outputs.input_names() == ["caption", "error"]
    assert not any(column.required for column in outputs.inputs), "either may be null"


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


def test_images_are_bounded_in_bytes_and_pixels(tmp_path):
    too_many_bytes = png_bytes() + b"\0" * serving.MAX_IMAGE_BYTES
    with pytest.raises(ValueError, match="row 2: the image is larger than 20 MiB"):
        serving.load_image(too_many_bytes, row=2)
    with pytest.raises(ValueError, match="larger than 20 MiB"):
        serving.load_image(base64.b64encode(too_many_bytes).decode())
    (tmp_path / "big.png").write_bytes(too_many_bytes)
    with pytest.raises(ValueError, match="larger than 20 MiB"):
        serving.load_image("big.png", root=tmp_path.resolve())
    bomb = png_bytes((5000, 5000), mode="1")  # 25 M pixels in a few KB
    assert len(bomb) < 100_000
    with pytest.raises(ValueError, match="more than 16,777,216 pixels .*downscale"):
        serving.load_image(bomb)
    assert serving.load_image(png_bytes((4096, 10), mode="1")).size == (4096, 10)


# --------------------------------------------------------------------------- a registered model, in-process and served

@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A tiny model trained for one epoch and registered: (home, model URI, encoded validation images)."""
    from blipexp.bench.serving import register_tiny_model

    home = tmp_path_factory.mktemp("home")
    uri, images = register_tiny_model(home, scenes=30, name="blip-serving-test")
    return home, uri, images


@pytest.fixture(scope="module")
def image_files(registered, tmp_path_factory):
    """Same-length names in `allowed/` and `elsewhere/`: an image, a system-like text file, a missing file."""
    base = tmp_path_factory.mktemp("server-disk")
    for folder in ("allowed", "elsewhere"):
        (base / folder).mkdir()
        (base / folder / "a.png").write_bytes(registered[2][0])
        (base / folder / "t.png").write_text("root:x:0:0:root:/root:/bin/bash\n")
    return base


@pytest.mark.slow
def test_in_process_predict_answers_per_row_and_caption_reads_its_own_files(registered, image_files):
    import mlflow
    import pandas as pd

    _, uri, images = registered
    model = mlflow.pyfunc.load_model(uri)
    out = model.predict(pd.DataFrame({"image": [images[0], b"not an image", image_files / "elsewhere" / "a.png",
                                                str(image_files / "elsewhere" / "a.png")]}))
    assert list(out.columns) == ["caption", "error"]
    assert [c is None for c in out["caption"]] == [False, True, False, True]
    assert [e is None for e in out["error"]] == [True, False, True, False]
    assert out["caption"][0] == out["caption"][2], "the same image as bytes and as a pathlib.Path"
    assert "row 1: the data is not a readable image" in out["error"][1]
    assert serving.caption(uri, [str(image_files / "elsewhere" / "a.png")]) == [out["caption"][0]]
    with pytest.raises(ValueError, match="t.png: row 0: the data is not a readable image"):
        serving.caption(uri, [str(image_files / "elsewhere" / "t.png")])


@pytest.fixture(scope="module")
def server(registered):
    """`mlflow models serve` on 127.0.0.1, as documented: no image folder allowed."""
    from blipexp.bench.serving import free_port, serve

    home, uri, _ = registered
    with serve(uri, home, free_port(), env={serving.IMAGE_ROOT_VARIABLE: ""}) as running:
        yield running


def ask(server, values):
    from blipexp.bench.serving import json_body, post

    answer = post(server, *json_body(values))
    assert "Traceback" not in json.dumps(answer.body) and "stack_trace" not in answer.body
    return answer


@pytest.mark.serving
def test_a_served_model_refuses_server_side_paths_with_one_answer_whether_they_exist_or_not(server, image_files):
    """Before: the PNG came back captioned, the text file and the missing file got different errors."""
    answers = [ask(server, [str(image_files / "elsewhere" / name)]) for name in ("a.png", "t.png", "m.png")]
    assert all(a.status == 200 for a in answers)
    assert answers[0].body == answers[1].body == answers[2].body
    (row,) = answers[0].body["predictions"]
    assert row["caption"] is None and "file paths are not read" in row["error"] and "a.png" not in row["error"]


@pytest.mark.serving
def test_a_served_batch_answers_each_row_and_no_stack_trace_leaves_the_server(server, registered):
    from blipexp.bench.serving import huge_png

    images = registered[2]
    answer = ask(server, [images[0], b"not an image", huge_png(), images[1]])
    assert answer.status == 200
    rows = answer.body["predictions"]
    assert [r["caption"] is None for r in rows] == [False, True, True, False]
    assert "row 1: the data is not a readable image" in rows[1]["error"]
    assert "row 2: the image has more than" in rows[2]["error"]
    assert rows[0]["error"] is None and rows[3]["error"] is None


@pytest.mark.serving
def test_the_operators_image_root_allows_paths_inside_and_refuses_outside_like_missing(registered, image_files):
    from blipexp.bench.serving import free_port, serve

    home, uri, images = registered
    root = image_files / "allowed"
    with serve(uri, home, free_port(), env={serving.IMAGE_ROOT_VARIABLE: str(root)}) as rooted:
        inside = ask(rooted, ["a.png"]).body["predictions"][0]
        from_bytes = ask(rooted, [images[0]]).body["predictions"][0]
        assert inside == from_bytes and isinstance(inside["caption"], str)
        outside = [ask(rooted, [str(image_files / "elsewhere" / n)]).body for n in ("a.png", "t.png", "m.png")]
        escapes = [ask(rooted, [p]).body for p in ("../elsewhere/a.png", "m.png")]
        assert all(body == escapes[1] for body in outside + escapes)
        assert escapes[1]["predictions"][0]["caption"] is None


@pytest.mark.serving
def test_a_short_load_test_with_malformed_requests_leaves_the_server_answering(server, registered):
    """The bench's serving section, short: good requests all succeed; bad ones get per-row errors or a 4xx."""
    from blipexp.bench.serving import good, json_body, load, malformed, post

    images = registered[2]
    steady = load(server, images, clients=2, requests=2, per_request=None)
    assert steady["errors"] == 0 and steady["requests"] == 4, steady["first_error"]
    bad = malformed(server, images, clients=2, requests=2)
    assert bad["good_errors"] == 0, bad["first_good_error"]
    assert {name: case["ok"] for name, case in bad["cases"].items()} == dict.fromkeys(bad["cases"], True), bad
    assert server.alive() and good(post(server, *json_body(images[:2])), 2)
