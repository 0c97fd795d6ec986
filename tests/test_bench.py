"""`python -m blipexp.bench --quick` runs every section and reports; timings are never asserted."""
import json
import subprocess
import sys

import pytest

from blipexp.bench.report import met, targets
from blipexp.bench.sizes import FULL
from blipexp.bench.trial import EvaluationClock


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run([sys.executable, "-m", "blipexp.bench", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)  # with the serving section: a server start
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text(), done.stdout


def test_every_section_reports_finite_positive_figures(quick_report):
    report, _, _ = quick_report
    assert report["size"] == "quick"
    assert report["peak"]["fp32_gflops"] > 0 and report["peak"]["bf16_gflops"] > 0
    training = report["training"]
    for path in ("notebook", "plain", "full", "frozen", "cached", "full_b8", "cached_b8"):
        assert training[path] > 0, path
    # FLOPs follow the work: padding to max_length costs more, a frozen encoder has no backward, cached none at all
    assert training["notebook_flops_per_sample"] > training["full_flops_per_sample"]
    assert training["full_flops_per_sample"] > training["frozen_flops_per_sample"] > training["cached_flops_per_sample"]
    assert all(report["generation"][k] > 0 for k in ("batched", "single", "cached_batched", "cached_single"))
    assert 0 < report["trial"]["evaluation_share"] < 1 and 0 < report["trial"]["tracking_share"] < 1
    assert len(report["sweep"]) == 3 and all(r["trials"] >= 1 and r["seconds"] > 0 for r in report["sweep"].values())
    serving = report["serving"]
    assert [(r["clients"], r["images_per_request"]) for r in serving["load"]] == [(1, 1), (2, 1), (1, 8), (2, 8)]
    assert all(r["images_per_s"] > 0 and r["errors"] == 0 for r in serving["load"])
    assert all(case["ok"] for case in serving["malformed"]["cases"].values()) and serving["alive_after"]


def test_the_markdown_report_lists_every_target_with_a_verdict(quick_report):
    report, text, stdout = quick_report
    assert "python -m blipexp.bench --quick" in text and report["machine"]["cpu"] in text
    for name, _, _, _ in targets(report):
        assert f"| {name} |" in text
    assert text.count("| yes |") + text.count("| NO |") == len(targets(report))
    assert text.strip() in stdout, "the report is printed too"


def test_targets_read_as_stated():
    assert met("samples/s ratio", 1.6, 1.5) and not met("samples/s ratio", 1.4, 1.5)
    assert met("share of trial time (at most)", 0.02, 0.03) and not met("share of trial time (at most)", 0.04, 0.03)
    assert FULL.model == "base" and FULL.sweep_trials == 8, "the full benchmark is the issue's: BLIP-base, 8 trials"


def test_the_evaluation_clock_sums_every_splits_runtime():
    clock = EvaluationClock()
    clock.on_evaluate(None, None, None, metrics={"eval_loss": 2.0, "eval_cider": 0.5, "eval_runtime": 1.25,
                                                 "eval_samples_per_second": 8.0})
    clock.on_evaluate(None, None, None, metrics={"test_cider": 0.4, "test_runtime": 0.5})
    clock.on_evaluate(None, None, None)  # an evaluation without metrics adds nothing
    assert clock.seconds == 1.75, "runtime only: not the loss, the scores or the throughput"
