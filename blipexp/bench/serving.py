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
import io
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .sampling import Sampler
from .server import (
    Answer,
    Server,
    free_port,
    good,
    json_body,
    logged_batches,
    parquet_body,
    post,
    register_tiny_model,
    serve,
)
from .sizes import SERVING_SIZES, Size, log


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
