"""What the serving section serves and sends: a tiny model trained and registered, a real `mlflow models serve` of
it on 127.0.0.1 (its log, liveness and memory), and requests in the two forms a client sends (base64 text in JSON,
raw bytes in Parquet) with their answers."""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil


MODEL_NAME = "bench-serving"
START_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 120
START_POLL_S = 0.2  # between /ping tries while the server starts: a refused connection costs nothing


def register_tiny_model(home: Path, scenes: int, name: str = MODEL_NAME, overrides: Sequence[str] = ()
                        ) -> tuple[str, list[bytes]]:
    """Train a tiny model for one epoch on `scenes` pitch scenes (and `--set` overrides) and register it, to serve
    captions of the spec's max_new_tokens: its version's URI, and the encoded validation images (what clients send)."""
    from .. import registry, tracking
    from ..data import load_data
    from ..experiment import catalog
    from ..training.train import train_trial

    spec = catalog.load("football_baseline", catalog.experiments_dir()).tiny().replace(
        pitch_scenes=scenes, epochs=1, sample_captions=0, test_fraction=0.0).with_overrides(overrides)
    tracking.configure(home)
    tracking.use_experiment("bench-serving", home)
    data = load_data(spec, home, progress=False)
    result = train_trial(spec, data, home, echo=False)
    version = registry.log_and_register(result.model_dir, registered_model=name, run_id=result.run_id,
                                        tags={"objective": str(result.objective)}, description="serving benchmark",
                                        generation={"max_new_tokens": spec.max_new_tokens})
    images = [data.images.read(example.ref) for example in data.validation[:8]]
    return f"models:/{name}/{version.version}", images


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path  # the server's stdout and stderr

    def log(self) -> str:
        """What the server has written so far (with BLIPEXP_SERVE_LOG_LEVEL=DEBUG, a line per batch)."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=5) as answer:
                return self.process.poll() is None and answer.status == 200
        except OSError:
            return False

    def rss_bytes(self) -> int:
        """Resident memory of the server and every process it started (uvicorn and its workers)."""
        try:
            root = psutil.Process(self.process.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total


@contextlib.contextmanager
def serve(model_uri: str, home: Path, port: int, workers: int = 1, env: dict[str, str] | None = None
          ) -> Iterator[Server]:
    """`mlflow models serve` on 127.0.0.1:port for the model, until the block ends (bounded start-up wait)."""
    from .. import tracking

    # the server execs uvicorn from PATH: the venv's bin, as when the venv is activated
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    child_env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": tracking.tracking_uri(home), **(env or {})}
    # its log goes to a file: a pipe nobody reads would fill up with access lines and block the server; appended
    # to (O_APPEND), so reading it while the server writes moves nothing
    handle, name = tempfile.mkstemp(prefix="blipexp-serve-", suffix=".log")
    os.close(handle)
    log_path = Path(name)
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
             "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
            env=child_env, stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.alive():
            if process.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited: {server.log()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow models serve did not answer /ping within {START_TIMEOUT_S} s")
            time.sleep(START_POLL_S)
        yield server
    finally:
        _stop(process)
        log_path.unlink(missing_ok=True)


def _stop(process: subprocess.Popen) -> None:
    """End the server and the uvicorn processes it started, by their ids (nothing else is touched), at once: what
    is measured is over, and uvicorn's graceful stop would cost seconds of Python's teardown (torch, transformers
    and MLflow imported). `mlflow models serve` itself is ended so by SIGTERM too: Python does not catch it."""
    try:
        root = psutil.Process(process.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(tree, timeout=30)
    process.wait(timeout=30)


@dataclass
class Answer:
    status: int
    body: dict
    seconds: float


def json_body(images: list[bytes | str], params: dict | None = None) -> tuple[bytes, str]:
    """A `dataframe_split` JSON body: each image as base64 text (strings are sent as they are); generation params."""
    values = [v if isinstance(v, str) else base64.b64encode(v).decode("ascii") for v in images]
    body: dict = {"dataframe_split": {"columns": ["image"], "data": [[v] for v in values]}}
    if params:
        body["params"] = params
    return json.dumps(body).encode(), "application/json"


def parquet_body(images: list[bytes]) -> tuple[bytes, str]:
    """A Parquet body with a binary `image` column: raw bytes, no base64."""
    buffer = io.BytesIO()
    pd.DataFrame({"image": images}).to_parquet(buffer)
    return buffer.getvalue(), "application/vnd.apache.parquet"


def post(server: Server, body: bytes, content_type: str) -> Answer:
    request = urllib.request.Request(f"{server.url}/invocations", data=body, headers={"Content-Type": content_type})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    seconds = time.perf_counter() - started
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = {"message": raw.decode(errors="replace")}
    return Answer(status, parsed if isinstance(parsed, dict) else {"value": parsed}, seconds)


def logged_batches(log: str) -> list[dict]:
    """The batches a server logged (BLIPEXP_SERVE_LOG_LEVEL=DEBUG; blipexp.serving.batcher's lines): their size, how
    many requests they served, whether they failed, and their generation settings."""
    pattern = r"batch of (\d+) from (\d+) request\(s\)( failed)?(?: in \d+ ms)?: (\{.*\})"
    return [{"size": int(m[1]), "requests": int(m[2]), "failed": bool(m[3]), "settings": json.loads(m[4])}
            for m in re.finditer(pattern, log)]


def good(answer: Answer, rows: int) -> bool:
    """200, one caption per row, no row error."""
    rows_out = answer.body.get("predictions", []) if answer.status == 200 else []
    return len(rows_out) == rows and all(r.get("error") is None and isinstance(r.get("caption"), str)
                                         for r in rows_out)
