"""The serving section (`python -m blipexp.bench --only serving`): `mlflow models serve` under load, on 127.0.0.1.

A tiny model is trained for one epoch, registered, promoted and served by a real `mlflow models serve` (one
uvicorn worker, as documented), twice: with dynamic batching off (BLIPEXP_SERVE_MAX_BATCH=0: each request generates
alone, in its own thread) and on (the defaults, serve_settings.Batching). On each:
- load: for 1 and 8 images per request and 1 / 4 / 16 / 32 concurrent clients, each client sends its requests one
  after the other; requests alternate between the two forms a client can send, base64 text in JSON
  (`dataframe_split`) and raw bytes in a Parquet body. Reported: images/s, p50/p95/p99 latency, errors, and the
  mean images per generate call (from the server's batch log lines);
Then, on the server with batching on:
- malformed: while clients keep sending good requests of 1-8 images, one client sends bad ones: a batch with
  a good image, a non-image, a huge image (a small PNG of 100 M pixels) and 10 MB of base64 noise (each bad
  row must get its `error`, the good one its caption), and requests malformed as a whole (an empty body, a
  body that is not JSON, a wrong column), which must get a 4xx with a message and no stack trace;
- memory: the RSS of the server's process tree, sampled throughout; the server must still answer at the end.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from .sampling import Sampler
from .sizes import SERVING_SIZES, Size, log

MODEL_NAME = "bench-serving"
START_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 120


# --------------------------------------------------------------------------- a registered model and its server

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
            time.sleep(1)
        yield server
    finally:
        _stop(process)
        log_path.unlink(missing_ok=True)


def _stop(process: subprocess.Popen) -> None:
    """Stop the server and the uvicorn processes it started, by their ids (nothing else is touched)."""
    try:
        root = psutil.Process(process.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _, alive = psutil.wait_procs(tree, timeout=30)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    process.wait(timeout=30)


# --------------------------------------------------------------------------- requests

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
    """The batches a server logged (BLIPEXP_SERVE_LOG_LEVEL=DEBUG; blipexp.batcher's lines): their size, how many
    requests they served, whether they failed, and their generation settings."""
    pattern = r"batch of (\d+) from (\d+) request\(s\)( failed)?(?: in \d+ ms)?: (\{.*\})"
    return [{"size": int(m[1]), "requests": int(m[2]), "failed": bool(m[3]), "settings": json.loads(m[4])}
            for m in re.finditer(pattern, log)]


def good(answer: Answer, rows: int) -> bool:
    """200, one caption per row, no row error."""
    rows_out = answer.body.get("predictions", []) if answer.status == 200 else []
    return len(rows_out) == rows and all(r.get("error") is None and isinstance(r.get("caption"), str)
                                         for r in rows_out)


# --------------------------------------------------------------------------- load

def load(server: Server, images: list[bytes], clients: int, requests: int, per_request: int | None,
         seed: int = 0, stop: threading.Event | None = None) -> dict:
    """`clients` threads send `requests` requests each of `per_request` images (None: 1-8 at random), alternating
    base64 JSON and Parquet bytes. Images/s over the wall time, latency percentiles, failed requests."""
    rng = random.Random(seed)
    plans = []
    for client in range(clients):
        bodies = []
        for i in range(requests):
            count = per_request or rng.randint(1, 8)
            batch = [images[(client + i + k) % len(images)] for k in range(count)]
            bodies.append((count, *(json_body(batch) if i % 2 == 0 else parquet_body(batch))))
        plans.append(bodies)

    def run(bodies) -> list[tuple[int, Answer]]:
        done = []
        for count, body, content_type in bodies:
            if stop is not None and stop.is_set():
                break
            done.append((count, post(server, body, content_type)))
        return done

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = [a for done in pool.map(run, plans) for a in done]
    wall = time.perf_counter() - started
    latencies = np.array([a.seconds for _, a in answers]) * 1000
    failed = [a for count, a in answers if not good(a, count)]
    return {"clients": clients, "images_per_request": per_request or "1-8", "requests": len(answers),
            "images": sum(count for count, _ in answers), "seconds": wall,
            "images_per_s": sum(count for count, _ in answers) / wall,
            **{f"p{q}_ms": float(np.percentile(latencies, q)) for q in (50, 95, 99)},
            "errors": len(failed), "first_error": failed[0].body if failed else None}


# --------------------------------------------------------------------------- malformed requests

def huge_png(pixels: int = 100_000_000) -> bytes:
    """A PNG of `pixels` pixels that is small on the wire: a one-bit, blank 10000x10000 picture."""
    from PIL import Image

    side = int(pixels ** 0.5)
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def malformed_cases(good_image: bytes) -> dict[str, tuple[bytes, str, list[bool] | None]]:
    """name -> (body, content type, which rows must fail; None: the request as a whole must get a 4xx)."""
    noise = base64.b64encode(np.random.default_rng(0).bytes(7_500_000)).decode("ascii")  # 10 MB of text
    batch = [good_image, b"this is not an image", huge_png(), noise]
    return {
        "bad rows among good (not an image, 100 MP PNG, 10 MB base64 noise)": (*json_body(batch),
                                                                              [False, True, True, True]),
        "bad rows as Parquet bytes": (*parquet_body([b"not an image", good_image]), [True, False]),
        "empty body": (b"", "application/json", None),
        "not JSON": (b"{\"dataframe_split\": ", "application/json", None),
        "wrong column": (json.dumps({"dataframe_split": {"columns": ["picture"], "data": [["x"]]}}).encode(),
                         "application/json", None),
    }


def judge(answer: Answer, failing_rows: list[bool] | None) -> dict:
    """What came back for a malformed request, and whether it is the right answer (per-row errors or a 4xx), with
    a message and no stack trace."""
    text = json.dumps(answer.body)
    no_trace = "Traceback" not in text and "stack_trace" not in answer.body
    if failing_rows is None:
        message = str(answer.body.get("message", ""))
        ok = 400 <= answer.status < 500 and bool(message) and no_trace
        return {"status": answer.status, "ok": ok, "answer": message[:200]}
    rows = answer.body.get("predictions", [])
    errors = [r.get("error") for r in rows]
    ok = (answer.status == 200 and len(rows) == len(failing_rows) and no_trace
          and all((e is not None) == bad and (r.get("caption") is None) == bad
                  for r, e, bad in zip(rows, errors, failing_rows)))
    return {"status": answer.status, "ok": ok, "answer": [e[:200] if e else None for e in errors] or text[:200]}


def malformed(server: Server, images: list[bytes], clients: int, requests: int) -> dict:
    """The malformed cases sent one after the other while `clients` clients send good requests of 1-8 images."""
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        background = pool.submit(load, server, images, clients, requests, None, 1, stop)
        cases = {}
        for name, (body, content_type, failing) in malformed_cases(images[0]).items():
            cases[name] = judge(post(server, body, content_type), failing)
            log(f"serving, malformed: {name}: {cases[name]['status']} {'ok' if cases[name]['ok'] else 'WRONG'}: "
                f"{str(cases[name]['answer'])[:160]}")
        good_load = background.result()
    return {"cases": cases, "good_requests": good_load["requests"], "good_errors": good_load["errors"],
            "first_good_error": good_load["first_error"]}


class PeakRss(Sampler):
    """The server tree's peak RSS, sampled every 0.2 s in a thread while the block runs."""

    def __init__(self, server: Server) -> None:
        super().__init__(every_s=0.2)
        self.server, self.peak = server, 0

    def sample(self) -> None:
        self.peak = max(self.peak, self.server.rss_bytes())


# --------------------------------------------------------------------------- the section

def bench_serving(size: Size, home: Path) -> dict:
    from ..serving.serve_settings import LOG_LEVEL_VARIABLE, MAX_BATCH_VARIABLE, MAX_WAIT_VARIABLE, Batching

    sizes = SERVING_SIZES[size.name]
    model_uri, images = register_tiny_model(home, sizes["scenes"], overrides=size.overrides)
    mb = 2**20
    on = Batching()  # the defaults, set explicitly: the report names what it measured whatever the shell holds
    result: dict = {"workers": 1, "max_batch": on.max_batch, "max_wait_ms": on.max_wait_ms, "load": []}
    for batching, env in (("off", {MAX_BATCH_VARIABLE: "0"}),
                          ("on", {MAX_BATCH_VARIABLE: str(on.max_batch), MAX_WAIT_VARIABLE: str(on.max_wait_ms)})):
        with serve(model_uri, home, free_port(), env={**env, LOG_LEVEL_VARIABLE: "DEBUG"}) as server:
            for body in (json_body(images[:1]), parquet_body(images[:1])):  # warm-up: first requests pay for imports
                post(server, *body)
            if batching == "on":
                result["idle_rss_mb"] = server.rss_bytes() / mb
            with PeakRss(server) as rss:
                result["load"] += [_load_row(server, images, clients, per_request, sizes, batching)
                                   for per_request in (1, 8) for clients in sizes["clients"]]
            if batching == "off":
                continue
            result["load_peak_rss_mb"] = rss.peak / mb
            with PeakRss(server) as rss:
                result["malformed"] = malformed(server, images, sizes["malformed_clients"],
                                                sizes["malformed_requests"])
            result["malformed_peak_rss_mb"] = rss.peak / mb
            result["after_rss_mb"] = server.rss_bytes() / mb
            result["alive_after"] = server.alive() and good(post(server, *json_body(images[:2])), 2)
    log(f"serving: server tree RSS idle {result['idle_rss_mb']:.0f} MB, peak under load "
        f"{result['load_peak_rss_mb']:.0f} MB, with malformed requests {result['malformed_peak_rss_mb']:.0f} MB, "
        f"after {result['after_rss_mb']:.0f} MB; answering after: {result['alive_after']}")
    return result


def _load_row(server: Server, images: list[bytes], clients: int, per_request: int, sizes: dict,
              batching: str) -> dict:
    """One configuration of the load, with the mean images per generate call the server logged meanwhile."""
    before = len(server.log())
    row = load(server, images, clients, max(sizes["min_requests"], sizes["requests"] // clients), per_request)
    batches = logged_batches(server.log()[before:])
    row.update(batching=batching, mean_batch=sum(b["size"] for b in batches) / max(1, len(batches)))
    log(f"serving, batching {batching}: {clients} client(s), {per_request} image(s)/request: "
        f"{row['images_per_s']:.1f} images/s, p50 {row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms, "
        f"p99 {row['p99_ms']:.0f} ms, {row['mean_batch']:.1f} images per generate call, {row['errors']} error(s) in "
        f"{row['requests']} requests")
    return row


def rows_by_batching(result: dict) -> dict[tuple[int, int], dict[str, dict]]:
    """(clients, images per request) -> {"off": row, "on": row}."""
    paired: dict[tuple[int, int], dict[str, dict]] = {}
    for row in result["load"]:
        paired.setdefault((row["clients"], row["images_per_request"]), {})[row["batching"]] = row
    return paired


def markdown(result: dict) -> list[str]:
    lines = [f"Serving: `mlflow models serve` ({result['workers']} worker) on 127.0.0.1, the tiny model; requests "
             "alternate base64 JSON and Parquet bytes. Dynamic batching off (`BLIPEXP_SERVE_MAX_BATCH=0`) and on "
             f"(max_batch {result['max_batch']}, max_wait {result['max_wait_ms']:g} ms); latencies in ms; images "
             "per generate call from the server's batch log:", "",
             "| clients | images/request | requests | off: images/s | p50 | p95 | p99 | on: images/s | p50 | p95 | "
             "p99 | images per generate call (on) | errors (off/on) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (clients, per_request), pair in rows_by_batching(result).items():
        off, on = pair["off"], pair["on"]
        figures = [f"{r['images_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f}"
                   for r in (off, on)]
        lines.append(f"| {clients} | {per_request} | {on['requests']} | {figures[0]} | {figures[1]} | "
                     f"{on['mean_batch']:.1f} | {off['errors']}/{on['errors']} |")
    m = result["malformed"]
    lines += ["", f"Malformed requests, sent while {m['good_requests']} good requests of 1-8 images ran "
              f"({m['good_errors']} of them failed):", "", "| request | status | right answer |", "|---|---|---|"]
    # "ok"/"WRONG", not "yes"/"NO": those mark the report's targets
    lines += [f"| {name} | {c['status']} | {'ok' if c['ok'] else 'WRONG'} |" for name, c in m["cases"].items()]
    alive = "yes" if result["alive_after"] else "NO"
    lines += ["", f"Server process tree RSS: idle {result['idle_rss_mb']:.0f} MB, peak under load "
              f"{result['load_peak_rss_mb']:.0f} MB, peak with malformed requests "
              f"{result['malformed_peak_rss_mb']:.0f} MB, after {result['after_rss_mb']:.0f} MB; "
              f"answering after: {alive}."]
    return lines
