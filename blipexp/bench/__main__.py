"""`python -m blipexp.bench [--quick] [--only SECTION ...]`: run the sections, print each figure as it is measured,
then write report.json and report.md (see the package docstring)."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

from . import __doc__ as PACKAGE_DOC
from .generation import bench_generation
from .homes import empty_store, new_home
from .peak import bench_peak, summarize
from .pretrained import bench_pretrained, blip_base_vision_share, shaped_recipe
from .report import machine, markdown
from .sizes import DATA_SIZES, FULL, QUICK, Size, log
from .sweeps import bench_sweeps
from .training import bench_training
from .trial import bench_trial


def run(size: Size, sections: list[str]) -> dict:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    report: dict = {"size": size.name, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="blipexp-bench-") as scratch:
        work = Path(scratch)
        # --quick: every home starts with the training section's precision probe and an empty MLflow store (seconds
        # of CPU in each home otherwise); the full benchmark's start empty, as a user's first run finds its home
        probed = work / "training" if size.name == "quick" else None
        before = bench_peak(size, "before")  # and again after the timed sections: the machine's speed drifts
        if probed:
            empty_store(probed)
        for section in SECTIONS[1:]:
            if section == "trial" and {"trial", "sweep", "pruners"} & set(sections):  # they start from it: built
                report["pretrained"] = bench_pretrained(work / "pretrained")  # before anything of theirs is timed
            if section in sections:
                with _took(section):
                    _run_section(section, size, work, probed, report)
            if section == "evidence":  # the peak again after the timed paths, before the server's load
                report["peak"] = summarize(before, bench_peak(size, "after"))
    report["seconds"] = time.perf_counter() - started
    return report


def _run_section(section: str, size: Size, work: Path, probed: Path | None, report: dict) -> None:
    if section == "training":
        report["training"] = bench_training(size, work / "training")
    elif section == "generation":
        report["generation"] = bench_generation(size)
    elif section == "trial":
        report["trial"] = bench_trial(size, new_home(work / "trial", probed))
    elif section == "sweep":
        report["sweep"] = bench_sweeps(size, work, probed=probed)
        shaped = bench_pretrained(work / "pretrained", shaped_recipe(size))
        report["pretrained_shaped"] = {**shaped, "blip_base_vision_share": blip_base_vision_share()}
        report["sweep_shaped"] = bench_sweeps(size, work / "shaped", model=shaped["folder"], probed=probed)
    elif section == "pruners":
        from .pruners import bench_pruners

        report["pruners"] = bench_pruners(size, work / "pruners", probed)
    elif section == "adapters":
        from .adapters import bench_adapters

        report["adapters"] = bench_adapters(size, new_home(work / "adapters", probed))
    elif section == "data":
        from .data import bench_data

        report["data"] = bench_data(**DATA_SIZES[size.name], root=work / "data", log=log, overrides=size.overrides,
                                    probed=probed)
    elif section == "evidence":
        from .evidence import bench_evidence

        report["evidence"] = bench_evidence(size, work / "evidence", probed)
    elif section == "serving":
        from .serving import bench_serving

        report["serving"] = bench_serving(size, new_home(work / "serving", probed))


@contextlib.contextmanager
def _took(section: str):
    started = time.perf_counter()
    yield
    log(f"{section}: section done in {time.perf_counter() - started:.0f} s")


SECTIONS = ["peak", "training", "generation", "trial", "sweep", "pruners", "data", "adapters", "evidence", "serving"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blipexp.bench", description=PACKAGE_DOC.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: a smoke check of every section (2-3 minutes on 2 cores), not a measurement")
    parser.add_argument("--out", default="bench-results", help="folder for report.json and report.md")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS,
                        help="run these sections only (peak always runs: MFU needs it)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="run the sweeps compared over several seeds with the first N of their seeds only (a busy "
                             "machine's budget)")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    command = "python -m blipexp.bench" + (" --quick" if args.quick else "")
    if args.only != SECTIONS:
        command += " --only " + " ".join(args.only)
    if args.seeds is not None:
        if args.seeds < 1:
            parser.error(f"--seeds {args.seeds}: at least 1")
        size = dataclasses.replace(size, sweep_seeds=size.sweep_seeds[:args.seeds])
        command += f" --seeds {args.seeds}"
    log(f"{command}: {size.name} mode")
    report = run(size, ["peak", *args.only])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    text = markdown(report, command)
    (out / "report.md").write_text(text)
    log("\n" + text + f"\nwritten: {out / 'report.json'}, {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    from ..runtime.exiting import exit_now

    exit_now(main())
