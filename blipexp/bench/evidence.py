"""Evidence: how long intervals and paired tests take over many images, and what a cached evaluation costs.

- bootstrap: 95% intervals of every caption metric, and a paired comparison of two models, over `images` scored
  captions with 1,000 resamples (blipexp.scoring.evidence: resamples recomputed as matrix products, never by rescoring).
  The captions are generated pitch-scene descriptions of two known accuracies, scored once.
- cached evaluation: `python -m blipexp evaluate` of the tiny pretrained model on the pitch test split, run as a
  user runs it: the first time it captions the images, the second reads the evaluation cache (imports included).
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .homes import new_home
from .sizes import Size, log

# attempts: the `evaluate` command captioned, then read from the cache; the smoke check runs the command once (the
# second is the same code in a process of its own, ~10 s of CPU) and reads the cache in this process only
SIZES = {"full": dict(images=5000, resamples=1000, repeats=3, scenes=640, attempts=("captioned", "cached")),
         "quick": dict(images=200, resamples=200, repeats=1, scenes=24, attempts=("captioned",))}


def bench_evidence(size: Size, root: Path, probed: Path | None = None) -> dict:
    """`probed`: a home the evaluations' home starts from (homes.new_home); None: it starts empty."""
    sizes = SIZES[size.name]
    result = _bootstrap(sizes["images"], sizes["resamples"], sizes["repeats"])
    overrides = [f"pitch_scenes={sizes['scenes']}", *size.overrides]
    result.update(_cached_evaluation(new_home(root / "home", probed), overrides, sizes["attempts"]))
    return result


def _bootstrap(images: int, resamples: int, repeats: int) -> dict:
    from ..data.pitch import COUNT_WORDS, TEAMS, ZONES, Scene, random_scene
    from ..scoring import evidence
    from ..scoring.metrics import score_images

    rng = random.Random(0)

    def describe(scene: Scene, accuracy: float) -> str:
        def fact(right, options):
            return right if rng.random() < accuracy else rng.choice([o for o in options if o != right])

        return Scene(fact(scene.team, sorted(TEAMS)), fact(scene.players, sorted(COUNT_WORDS)),
                     fact(scene.zone, ZONES), fact(scene.night, (False, True))).caption

    scenes = [random_scene(rng) for _ in range(images)]
    references = [[scene.caption] for scene in scenes]
    started = time.perf_counter()
    a = score_images([describe(s, 0.6) for s in scenes], references)[1]
    scoring = time.perf_counter() - started
    b = score_images([describe(s, 0.7) for s in scenes], references)[1]
    timings = {"intervals": [], "paired": []}
    for seed in range(repeats):
        started = time.perf_counter()
        evidence.intervals(a, resamples, seed)
        timings["intervals"].append(time.perf_counter() - started)
        started = time.perf_counter()
        evidence.paired(a, b, resamples, seed)
        timings["paired"].append(time.perf_counter() - started)
    result = {"images": images, "resamples": resamples, "scoring_seconds": scoring,
              "intervals_seconds": min(timings["intervals"]), "paired_seconds": min(timings["paired"])}
    log(f"evidence: {resamples} resamples of {images} images: intervals {result['intervals_seconds']:.3f} s, "
        f"paired comparison {result['paired_seconds']:.3f} s (scoring the captions once: {scoring:.1f} s)")
    return result


def _cached_evaluation(home: Path, overrides: Sequence[str], attempts: Sequence[str]) -> dict:
    """`evaluate football_baseline --tiny --set OVERRIDE...` in `home` once per attempt: captioned, then read from
    the cache; then the cached evaluation again in this process."""
    from ..model.pretrain import CACHE_VARIABLE, cache_root, pretrained_tiny

    pretrained_tiny(home, echo=False)  # built before the clock starts (kept in the user's shared cache, if named)
    env = {**os.environ, CACHE_VARIABLE: str(cache_root(home))}
    sets = [part for override in overrides for part in ("--set", override)]
    command = [sys.executable, "-m", "blipexp", "evaluate", "football_baseline", "--tiny", "--home", str(home),
               *sets, "--json"]
    seconds, imports = [], 0.0
    for attempt in attempts:
        # the first run times its own imports: -X importtime lists every import of the command, the lazy ones too
        timed = [sys.executable, "-X", "importtime", *command[1:]] if not seconds else command
        started = time.perf_counter()
        done = subprocess.run(timed, capture_output=True, text=True, env=env)
        seconds.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(timed)} failed: {done.stderr[-2000:]}")
        imports = imports or _import_seconds(done.stderr)
        log(f"evidence: `evaluate` {attempt}: {seconds[-1]:.1f} s")
    in_process = _cached_in_process(home, overrides)
    log(f"evidence: `evaluate` cached, in process (no imports): {in_process:.2f} s")
    return {"evaluate_first_seconds": seconds[0], **({"evaluate_cached_seconds": seconds[1]} if seconds[1:] else {}),
            "evaluate_cached_in_process_seconds": in_process,
            "evaluate_command": " ".join(["python", *command[1:5], "--tiny", *sets]),
            "import_seconds": imports}


def _cached_in_process(home: Path, overrides: Sequence[str]) -> float:
    """The cached evaluation again, in this process: what a command costs beyond Python's imports."""
    from .. import tracking
    from ..experiment import catalog
    from ..scoring import assess

    spec = catalog.load("football_baseline", catalog.experiments_dir()).tiny()
    spec = spec.with_overrides(overrides)
    tracking.configure(home)
    started = time.perf_counter()
    evaluation = assess.evaluate(assess.base_model_target("football_baseline", spec, home), home, "test", echo=False)
    seconds = time.perf_counter() - started
    assert evaluation.cached, "the command before left this evaluation in the cache"
    return seconds


def _import_seconds(importtime: str) -> float:
    """The total of `python -X importtime`'s top-level lines (microseconds, cumulative)."""
    total = 0
    for line in importtime.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and not parts[2].startswith("  ") and parts[1].strip().isdigit():
            total += int(parts[1])
    return total / 1e6


def markdown(result: dict) -> list[str]:
    return ["### Evidence: intervals, paired tests, cached evaluation", "",
            f"- {result['resamples']} bootstrap resamples of {result['images']} scored images: every caption "
            f"metric's 95% interval in {result['intervals_seconds']:.3f} s; a paired comparison of two models "
            "(bootstrap interval and approximate-randomization p for every metric) in "
            f"{result['paired_seconds']:.3f} s "
            f"(best of the repeats; scoring the captions once took {result['scoring_seconds']:.1f} s).",
            f"- `{result['evaluate_command']}`: {result['evaluate_first_seconds']:.1f} s the first time (captioning "
            f"the test split), {_cached_seconds(result)}; about {result['import_seconds']:.1f} s of the first run is "
            "Python importing blipexp, torch, transformers and MLflow (timed by `-X importtime`); in a process "
            f"that has them, the cached evaluation takes {result['evaluate_cached_in_process_seconds']:.2f} s "
            "(the base model's folder rebuilt and hashed, the data listed, the cache read)."]


def _cached_seconds(result: dict) -> str:
    seconds = result.get("evaluate_cached_seconds")
    if seconds is None:
        return "not run again from the evaluation cache (the --quick smoke check runs the command once)"
    return f"{seconds:.1f} s again from the evaluation cache"
