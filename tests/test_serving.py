"""The registered model's pyfunc pieces that need no registered model: its input example, image decoding."""
import base64
import io
import json
from pathlib import Path

import pytest

from blipexp import registry, serving
from blipexp.serving import use

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop


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
def registered(tmp_path_factory, new_home):
    """A tiny model trained for one epoch and registered: (home, model URI, encoded validation images)."""
    from blipexp.bench.server import register_tiny_model

    home = new_home()
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


# blipexp/pyfunc_model.py as the first layout (before blipexp's packages) logged it into every registered version:
# loading such a version runs this text, so `blipexp.serving` must go on exporting BlipCaptioner
FIRST_LAYOUT_MODEL_CODE = '''"""The code MLflow logs as each registered model's pyfunc (models-from-code): loading a model runs this file, which
imports blipexp's BlipCaptioner, instead of unpickling an object, so no pickled code executes.

registry.log_and_register passes this file's path as `python_model`; MLflow copies it into the logged model.
"""
import mlflow.models

from blipexp.serving import BlipCaptioner

mlflow.models.set_model(BlipCaptioner())
'''


def test_a_version_logged_with_the_first_layouts_model_code_loads_and_captions(registered, tmp_path):
    import mlflow
    import pandas as pd

    _, uri, images = registered
    artifacts = use._artifacts(Path(mlflow.artifacts.download_artifacts(artifact_uri=uri,
                                                                        dst_path=str(tmp_path / "version"))))
    code = tmp_path / "pyfunc_model.py"
    code.write_text(FIRST_LAYOUT_MODEL_CODE)
    with mlflow.start_run(run_name="logged-by-the-first-layout"):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(code), signature=serving.signature(),
            artifacts={key: str(artifacts[key]) for key in (serving.ARTIFACT_KEY, serving.GENERATION_KEY)},
            pip_requirements=registry.pip_requirements())  # else MLflow infers them in a child process (~9 s)
    out = mlflow.pyfunc.load_model(info.model_uri).predict(pd.DataFrame({"image": images[:2]}))
    assert list(out["error"]) == [None, None] and all(isinstance(c, str) and c for c in out["caption"])
    assert out["caption"].tolist() == mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"image": images[:2]}))[
        "caption"].tolist(), "the same captions as the version logged with today's file"


@pytest.fixture(scope="module")
def champion(registered) -> str:
    """The registered version promoted as users promote one (`registry.promote` loads and captions it first): the
    URI of its champion alias, `models:/NAME@champion`."""
    name, version = registered[1].removeprefix("models:/").split("/")
    registry.promote(name, version)
    return f"models:/{name}@champion"


@pytest.fixture(scope="module")
def server(registered, champion):
    """`mlflow models serve` of the champion alias on 127.0.0.1, as documented: no image folder allowed. The alias
    form, so that REST scoring of a champion needs no server of its own."""
    from blipexp.bench.server import free_port, serve

    with serve(champion, registered[0], free_port(), env={serving.IMAGE_ROOT_VARIABLE: ""}) as running:
        yield running


def ask(server, values):
    from blipexp.bench.server import json_body, post

    answer = post(server, *json_body(values))
    assert "Traceback" not in json.dumps(answer.body) and "stack_trace" not in answer.body
    return answer


@pytest.mark.serving
def test_rest_scoring_of_the_champion_alias_answers_one_caption_per_image_as_caption_does(server, champion,
                                                                                         registered, tmp_path):
    """`mlflow models serve -m models:/NAME@champion` answers /invocations with one caption per image: those
    `blipexp caption` gives in-process for the same image files."""
    paths = [tmp_path / f"image{i}.png" for i in range(2)]
    for path, image in zip(paths, registered[2]):
        path.write_bytes(image)
    answer = ask(server, [path.read_bytes() for path in paths])
    assert answer.status == 200, answer.body
    captions = [row["caption"] for row in answer.body["predictions"]]
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    assert captions == serving.caption(champion, [str(p) for p in paths])


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


def test_the_operators_image_root_allows_paths_inside_and_refuses_outside_like_missing(registered, image_files,
                                                                                       monkeypatch):
    """The model loaded as a server loads it with the operator's BLIPEXP_SERVE_IMAGE_ROOT, answering REST through
    MLflow's scoring app in this process (tests/scoring_app.py): the variable is read when the model loads; the
    server fixture above is the real `mlflow models serve` process."""
    from scoring_app import scoring_app

    home, uri, images = registered
    monkeypatch.setenv(serving.IMAGE_ROOT_VARIABLE, str(image_files / "allowed"))
    with scoring_app(uri) as rooted:
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
    from blipexp.bench.server import good, json_body, post
    from blipexp.bench.serving import load, malformed

    images = registered[2]
    steady = load(server, images, clients=2, requests=2, per_request=None)
    assert steady["errors"] == 0 and steady["requests"] == 4, steady["first_error"]
    bad = malformed(server, images, clients=2, requests=2)
    assert bad["good_errors"] == 0, bad["first_good_error"]
    assert {name: case["ok"] for name, case in bad["cases"].items()} == dict.fromkeys(bad["cases"], True), bad
    assert server.alive() and good(post(server, *json_body(images[:2])), 2)


# --------------------------------------------------------------------------- limits on what a request may ask

def test_registered_settings_outside_the_servers_limits_stop_the_model_from_loading(registered, monkeypatch):
    import mlflow

    monkeypatch.setenv("BLIPEXP_SERVE_LIMIT_MAX_NEW_TOKENS", "10")  # the model was registered with 20
    with pytest.raises(ValueError, match="registered generation settings are outside this server's limits: "
                                         r"max_new_tokens=20 is outside this server's range of 1-10"):
        mlflow.pyfunc.load_model(registered[1])


@pytest.mark.serving
def test_a_served_model_answers_params_beyond_its_limits_with_a_400_naming_the_limit(server, registered):
    from blipexp.bench.server import good, json_body, post

    images = registered[2]
    for params, message in [({"batch_size": 0}, "batch_size=0 is outside this server's range of 1-32 "
                                                "(BLIPEXP_SERVE_LIMIT_BATCH_SIZE)"),
                            ({"num_beams": 64, "max_new_tokens": 100000}, "num_beams=64 is outside this server's "
                                                                         "range of 1-8 (BLIPEXP_SERVE_LIMIT_NUM_BEAMS)")]:
        answer = post(server, *json_body(images[:1], params))
        assert answer.status == 400 and message in answer.body["message"], answer.body
        assert "Traceback" not in json.dumps(answer.body) and "stack_trace" not in answer.body
    assert good(post(server, *json_body(images[:2], {"batch_size": 1, "num_beams": 2})), 2)


# --------------------------------------------------------------------------- dynamic batching, served

# the batching server's max_batch: every test below sends whole batches of each key at once. More than asyncio's
# default request threads (6 on 2 cores), so that one server also shows one-image clients filling a batch
BATCH = 12

FAILING_MODEL = '''\
"""BlipCaptioner whose batches fail when they hold a blank (one-colour) image: a failure injected in the server."""
import mlflow.models

from blipexp.serving import BlipCaptioner


class BlankFails(BlipCaptioner):
    def _caption_batch(self, key, pixels):
        if any(bool((p.amax(dim=(1, 2)) == p.amin(dim=(1, 2))).all()) for p in pixels):
            raise RuntimeError("injected failure: a blank image")
        return super()._caption_batch(key, pixels)


mlflow.models.set_model(BlankFails())
'''


@pytest.fixture(scope="module")
def batching_server(registered, tmp_path_factory):
    """The registered model's files served by BlankFails, batching at most BATCH images and waiting (10 minutes)
    until a batch is full: which requests share a batch is then decided by what the test sends, not by timing.
    Each batch is logged (BLIPEXP_SERVE_LOG_LEVEL=DEBUG). One server for all batching tests (a start costs ~15 s of
    CPU): each sends whole batches only, so none leaves images queued for the next."""
    yield from serve_blank_fails(registered, tmp_path_factory, BATCH)


def serve_blank_fails(registered, tmp_path_factory, max_batch: int):
    import mlflow
    import pandas as pd

    from blipexp.bench.server import free_port, serve

    home, uri, _ = registered
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path_factory.mktemp("model")))
    artifacts = use._artifacts(Path(local))
    code = tmp_path_factory.mktemp("code") / "blank_fails.py"
    code.write_text(FAILING_MODEL)
    with mlflow.start_run(run_name="blank-fails"):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(code), signature=serving.signature(),
            input_example=pd.DataFrame({"image": [serving.example_image_base64()]}),
            artifacts={key: str(artifacts[key]) for key in (serving.ARTIFACT_KEY, serving.GENERATION_KEY)},
            pip_requirements=registry.pip_requirements())  # else MLflow infers them in a child process (~10 s)
    env = {"BLIPEXP_SERVE_MAX_BATCH": str(max_batch), "BLIPEXP_SERVE_MAX_WAIT_MS": "600000",
           "BLIPEXP_SERVE_LOG_LEVEL": "DEBUG", serving.IMAGE_ROOT_VARIABLE: ""}
    with serve(info.model_uri, home, free_port(), env=env) as running:
        yield running


@pytest.fixture(scope="module")
def scenes() -> list[bytes]:
    """2 * BATCH generated pitch scenes as PNG bytes (two whole batches)."""
    from blipexp.data import pitch

    encoded = []
    for _, image in pitch.scenes(2 * BATCH, seed=11):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


@pytest.fixture(scope="module")
def alone(registered, scenes):
    """Each scene captioned alone (in-process, one image per call) greedy, and the first BATCH (those the settings
    test sends) with 3 beams."""
    import mlflow
    import pandas as pd

    model = mlflow.pyfunc.load_model(registered[1])
    return {beams: [model.predict(pd.DataFrame({"image": [image]}), params={"num_beams": beams})["caption"][0]
                    for image in images] for beams, images in ((1, scenes), (3, scenes[:BATCH]))}


def at_once(server, requests: list[tuple[list, dict | None]]) -> tuple[list, list[dict]]:
    """Send the requests concurrently; their answers, and the batches the server logged meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    from blipexp.bench.server import json_body, logged_batches, post

    before = len(server.log())
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda request: post(server, *json_body(*request)), requests))
    return answers, logged_batches(server.log()[before:])


def rows(answer) -> list[tuple]:
    assert answer.status == 200, answer.body
    return [(row["caption"], row["error"]) for row in answer.body["predictions"]]


@pytest.mark.serving
def test_concurrent_requests_share_batches_and_each_gets_its_own_rows_in_order_with_its_errors(batching_server,
                                                                                               scenes, alone):
    images, captions, half = scenes, alone[1], BATCH // 2
    assert len(set(captions)) >= 5, f"too few distinct captions to tell the images' rows apart: {captions}"
    sent = [images[half * i:half * (i + 1)] for i in range(4)]  # a bad row amid each request's good ones
    answers, batches = at_once(batching_server, [([*good[:3], b"not an image", *good[3:]], None) for good in sent])
    for i, answer in enumerate(answers):
        expected = captions[half * i:half * (i + 1)]
        assert [caption for caption, _ in rows(answer)] == [*expected[:3], None, *expected[3:]], \
            f"request {i} got other images' rows"
        assert rows(answer)[3][1].startswith("row 3: the data is not a readable image")
    assert [(b["size"], b["requests"], b["failed"]) for b in batches] == [(BATCH, 2, False)] * 2, \
        "24 good images of 4 requests, 6 each: two full batches of two requests each"


@pytest.mark.serving
def test_requests_of_other_settings_never_share_a_batch_and_captions_are_those_made_alone(batching_server,
                                                                                         scenes, alone):
    """Greedy and beam search: an image's caption does not depend on the images beside it in its batch."""
    images, half = scenes[:BATCH], BATCH // 2
    assert alone[3] != alone[1][:BATCH], \
        "beam search changes no caption here: the test could not tell the settings apart"
    mixed = [images[5 * i % BATCH] for i in range(BATCH)]  # each image once per setting, not in the scenes' order
    requests = [(mixed[:half], None), (mixed[half:][::-1], {"num_beams": 3}),
                (mixed[half:], None), (mixed[:half][::-1], {"num_beams": 3})]
    answers, batches = at_once(batching_server, requests)
    for (sent, params), answer in zip(requests, answers):
        beams = (params or {}).get("num_beams", 1)
        assert [caption for caption, _ in rows(answer)] == [alone[beams][images.index(i)] for i in sent]
    assert sorted((b["settings"]["num_beams"], b["size"], b["requests"]) for b in batches) == \
        [(1, BATCH, 2), (3, BATCH, 2)]


@pytest.mark.serving
def test_a_failing_batch_fails_only_its_own_rows_and_the_server_goes_on(batching_server, scenes, alone):
    from PIL import Image

    images, captions, half = scenes, alone[1], BATCH // 2
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 90, 90)).save(buffer, format="PNG")
    # a batch of each: greedy, the blank image and 11 scenes; 2 beams, 12 other scenes
    requests = [([buffer.getvalue(), *images[:half - 1]], None), (images[BATCH:BATCH + half], {"num_beams": 2}),
                (images[half - 1:BATCH - 1], None), (images[BATCH + half:], {"num_beams": 2})]
    answers, batches = at_once(batching_server, requests)
    for answer in (answers[0], answers[2]):  # the greedy batch held the blank image: each of its rows failed
        for row, (caption, error) in enumerate(rows(answer)):
            assert caption is None
            assert error == f"row {row}: captioning failed (RuntimeError: injected failure: a blank image); " \
                            "send it again"
    assert all(error is None for answer in (answers[1], answers[3]) for _, error in rows(answer))
    assert sorted((b["settings"]["num_beams"], b["failed"]) for b in batches) == [(1, True), (2, False)]
    assert "Traceback" in batching_server.log(), "the failure's traceback is in the server's log, not the answer"
    after, _ = at_once(batching_server, [(images[:BATCH], None)])
    assert [caption for caption, _ in rows(after[0])] == captions[:BATCH]


def test_a_request_waits_a_bounded_time_for_its_captions_then_its_rows_say_so(registered, scenes, monkeypatch,
                                                                             caplog):
    """A lone image waits for a batch of 4 that never fills (10 minutes' max_wait): its request answers after
    BLIPEXP_SERVE_CAPTION_TIMEOUT_S with a row error naming the variable, its image leaves the queue unrun, and
    the next requests are served. Before: the request waited forever (MLflow's own timeout answers the client
    but leaves the thread waiting)."""
    import logging

    import mlflow
    import pandas as pd

    for variable, value in [("BLIPEXP_SERVE_MAX_BATCH", "4"), ("BLIPEXP_SERVE_MAX_WAIT_MS", "600000"),
                            ("BLIPEXP_SERVE_CAPTION_TIMEOUT_S", "1")]:
        monkeypatch.setenv(variable, value)
    model = mlflow.pyfunc.load_model(registered[1])
    lone = model.predict(pd.DataFrame({"image": [scenes[0]]}))
    assert lone["caption"][0] is None
    assert lone["error"][0] == "row 0: captioning timed out: no caption within 1 s " \
                               "(BLIPEXP_SERVE_CAPTION_TIMEOUT_S raises this bound); send it again"
    model.unwrap_python_model().caption_timeout_s = 600  # what follows may take its time on a loaded machine
    with caplog.at_level(logging.DEBUG, logger="blipexp.serving.batcher"):
        full = model.predict(pd.DataFrame({"image": scenes[:4]}))
    assert full["error"].isna().all() and full["caption"].notna().all(), full
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["batch of 4 from 1 request(s)"], \
        "the timed-out image was not run with them"


@pytest.mark.serving
def test_more_one_image_clients_than_mlflows_default_threads_share_one_call(batching_server, scenes):
    """BATCH (12) concurrent one-image requests make one batch of 12 (it waits until full): only if the server runs
    12 predicts at once, where asyncio's default pool holds cores + 4 (6 on 2 cores; BLIPEXP_SERVE_REQUEST_THREADS).
    The pool is widened by the server's first request: here one of 12 images (a full batch at once), unless another
    test's came first (none sends more requests at once than that default pool holds)."""
    images = scenes[:BATCH]
    first, _ = at_once(batching_server, [(images, None)])
    assert all(caption is not None for caption, _ in rows(first[0]))
    answers, batches = at_once(batching_server, [([image], None) for image in images])
    assert all(caption is not None for answer in answers for caption, _ in rows(answer))
    assert [(b["size"], b["requests"]) for b in batches] == [(BATCH, BATCH)], batches
    assert "16 request threads (BLIPEXP_SERVE_REQUEST_THREADS)" in batching_server.log()
