"""The data section of the benchmark (`python -m blipexp.bench --only data`): memory and time against dataset size.

For folders of generated 640x480 JPEG photos (1k / 5k / 20k; --quick: a few dozen), each measured in a fresh
process so that its peak memory is its own:
- loading at BLIP-base's 384 px: the first look (first and second run), the time to the first batch, the steady
  images/s of 1 and 2 DataLoader worker processes, and peak memory (PSS of the process and its workers);
- the eager path blipexp had before (every image decoded and turned into one fp32 tensor up front), where it
  fits in memory, for comparison;
- a real `python -m blipexp run football_baseline --tiny` of 1 epoch on the folder, twice: peak memory (PSS) of
  the whole process tree, and the seconds from process start to the first training step.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psutil

from .homes import new_home
from .sampling import Sampler

PHOTO_SIZE = (640, 480)
BASE_IMAGE_SIZE = 384  # BLIP-base's image processor
BATCH = 8
WORDS = ("red", "blue", "green", "yellow", "white", "dark")


def write_photos(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` photo-like JPEGs (smooth backgrounds, shapes, sensor noise) with a captions.csv; reused if present."""
    done = folder / "captions.csv"
    if done.is_file() and sum(1 for _ in folder.glob("*.jpg")) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [range(start, min(count, start + 500)) for start in range(0, count, 500)]
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count()) as pool:
        rows = [row for part in pool.map(_write_chunk, [folder] * len(chunks), chunks, [seed] * len(chunks))
                for row in part]
    done.write_text("image,text\n" + "".join(f"{name},{caption}\n" for name, caption in rows))
    return folder


def _write_chunk(folder: Path, indices: range, seed: int) -> list[tuple[str, str]]:
    from PIL import Image, ImageDraw

    rows = []
    width, height = PHOTO_SIZE
    for i in indices:
        rng = np.random.default_rng(seed * 1_000_003 + i)
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        ramp = np.linspace(0, 1, height)[:, None, None]
        pixels = (top * (1 - ramp) + bottom * ramp).repeat(width, axis=1)
        pixels += rng.normal(0, 8, pixels.shape)  # sensor noise: JPEG sizes like real photos (tens of KB)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        shapes = int(rng.integers(1, 5))
        colour = WORDS[int(rng.integers(len(WORDS)))]
        for _ in range(shapes):
            x, y, r = int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(20, 120))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        name = f"{i:06d}.jpg"
        image.save(folder / name, "JPEG", quality=88)
        rows.append((name, f"a {colour} scene with {shapes} round shapes"))
    return rows


class PeakRss(Sampler):
    """Samples the memory of a process and all its descendants every `every_s`; `peak` in bytes. Summed as PSS (each
    shared page divided among the processes sharing it): forked workers share most of their parent's pages,
    which a sum of RSS would count once per worker."""

    def __init__(self, pid: int, every_s: float):
        super().__init__(every_s=every_s)
        self.process = psutil.Process(pid)
        self.peak = 0

    def sample(self) -> None:
        try:
            tree = [self.process, *self.process.children(recursive=True)]
            self.peak = max(self.peak, sum(p.memory_full_info().pss for p in tree if p.is_running()))
        except psutil.Error:  # the process ended between listing and reading
            pass


def _in_fresh_process(*args: str, every_s: float) -> dict:
    """Run this module's `measure` in a new Python process; its JSON result, with the tree's peak RSS."""
    command = [sys.executable, "-m", "blipexp.bench.data", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakRss(process.pid, every_s) as rss:
        out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{err[-3000:]}")
    return {**json.loads(out.strip().splitlines()[-1]), "peak_rss_gib": rss.peak / 2**30}


def measure_loading(folder: Path, home: Path, workers: int, batches: int) -> dict:
    """In this process: first look, first batch and steady images/s of the lazy path at 384 px."""
    import torch
    from transformers import BlipImageProcessorPil

    from ..data.features import PixelRows, training_dataset
    from ..data.sources import load_caption_data

    started = time.perf_counter()
    data = load_caption_data(str(folder), cache_dir=home / "cache" / "data", progress=False)
    look = time.perf_counter() - started
    processor = BlipImageProcessorPil(size={"height": BASE_IMAGE_SIZE, "width": BASE_IMAGE_SIZE})
    dataset = training_dataset(PixelRows(data, data.train, processor), data.train)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                                         collate_fn=lambda items: torch.stack([i["pixel_values"] for i in items]))
    batches_seen, first_batch = 0, None
    for batch in loader:
        batches_seen += 1
        if first_batch is None:
            first_batch = time.perf_counter() - started
            steady_from = time.perf_counter()
        if batches_seen > batches:
            break
    steady = (batches_seen - 1) * BATCH / (time.perf_counter() - steady_from)
    return {"images": len(data.train) + len(data.validation) + len(data.test), "first_look_s": look,
            "checked": data.survey.checked, "reused": data.survey.reused, "first_batch_s": first_batch,
            "images_per_s": steady, "workers": workers}


def measure_eager(folder: Path) -> dict:
    """The eager path blipexp had: every train image decoded, then all turned into one fp32 tensor."""
    from transformers import BlipImageProcessorPil

    from ..data.sources import load_caption_data

    started = time.perf_counter()
    data = load_caption_data(str(folder), progress=False)
    images = [data.image(e) for e in data.train]
    processor = BlipImageProcessorPil(size={"height": BASE_IMAGE_SIZE, "width": BASE_IMAGE_SIZE})
    import torch

    pixels = torch.cat([processor(images=images[i:i + 64], return_tensors="pt")["pixel_values"]
                        for i in range(0, len(images), 64)])
    return {"images": len(images), "first_batch_s": time.perf_counter() - started, "tensor_gib": pixels.nbytes / 2**30}


def measure_run(folder: Path, home: Path, every_s: float, overrides: Sequence[str]) -> dict:
    """A real 1-epoch `--tiny --set OVERRIDE...` run on the folder: peak RSS of its process tree, and its time to the
    first step."""
    import mlflow

    sets = [part for override in [f"dataset={folder}", "epochs=1", *overrides] for part in ("--set", override)]
    command = [sys.executable, "-m", "blipexp", "run", "football_baseline", "--tiny", "--home", str(home), *sets]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with PeakRss(process.pid, every_s) as rss:
        _, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{err[-3000:]}")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], order_by=["start_time DESC"],
                              max_results=1)
    return {"seconds": time.perf_counter() - started, "peak_rss_gib": rss.peak / 2**30,
            "seconds_to_first_step": runs[0].data.metrics.get("seconds_to_first_step")}


def bench_data(sizes: list[int], root: Path, batches: int, eager_up_to: int, every_s: float, attempts: int, log,
               overrides: Sequence[str] = (), probed: Path | None = None) -> dict:
    """Per size: loading (`attempts` times: the second reuses the first's survey, then with 2 workers), the eager
    path, a `--tiny` run `attempts` times (with `overrides`, in a home started from the home `probed`, when given:
    homes.new_home); memory sampled every `every_s`."""
    results = {}
    for count in sizes:
        folder = write_photos(root / f"photos-{count}", count)
        home = root / f"home-{count}"
        row = {}
        for attempt in ("first", "second")[:attempts]:
            row[f"load_{attempt}"] = _in_fresh_process("loading", str(folder), str(home), "1", str(batches),
                                                       every_s=every_s)
        row["load_2_workers"] = _in_fresh_process("loading", str(folder), str(home), "2", str(batches),
                                                  every_s=every_s)
        if count <= eager_up_to:
            row["eager"] = _in_fresh_process("eager", str(folder), every_s=every_s)
        run_home = new_home(root / f"run-{count}", probed)
        for attempt in ("first", "second")[:attempts]:
            row[f"run_{attempt}"] = measure_run(folder, run_home, every_s, overrides)
        log(f"data {count}: {json.dumps(row)}")
        results[str(count)] = row
    return results


def markdown(report: dict) -> list[str]:
    lines = [f"Data: generated {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG photos, pixels at {BASE_IMAGE_SIZE} px, batch {BATCH}:",
             "", "| photos | first look (1st run) | first look (2nd run) | first batch (2nd run) | images/s, 1 worker "
             "| images/s, 2 workers | peak memory, loading | eager path: ready after, peak memory | `--tiny` run, 1 epoch: "
             "peak memory | its first step (1st / 2nd run) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for count, r in report.items():
        first, second, two = r["load_first"], r.get("load_second", r["load_first"]), r["load_2_workers"]
        eager = (f"{r['eager']['first_batch_s']:.0f} s, {r['eager']['peak_rss_gib']:.2f} GiB" if "eager" in r
                 else "not run (would not fit)")
        steps = "/".join(f"{r[k]['seconds_to_first_step']:.1f} s" if r[k]["seconds_to_first_step"] else "-"
                         for k in ("run_first", "run_second") if k in r)
        lines.append(f"| {int(count):,} | {first['first_look_s']:.1f} s | {second['first_look_s']:.1f} s | "
                     f"{second['first_batch_s']:.1f} s | {first['images_per_s']:.0f} | {two['images_per_s']:.0f} | "
                     f"{max(first['peak_rss_gib'], second['peak_rss_gib']):.2f} GiB | {eager} | "
                     f"{max(r[k]['peak_rss_gib'] for k in ('run_first', 'run_second') if k in r):.2f} GiB | {steps} |")
    return lines


def _main(argv: list[str]) -> None:
    kind, *rest = argv
    if kind == "loading":
        folder, home, workers, batches = rest
        result = measure_loading(Path(folder), Path(home), int(workers), int(batches))
    else:
        result = measure_eager(Path(rest[0]))
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _main(sys.argv[1:])
    from ..runtime.exiting import exit_now

    exit_now(0)  # as blipexp's commands end (runtime/exiting.py)
