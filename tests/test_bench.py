"""`python -m blipexp.bench --quick` runs every section and reports; timings are never asserted."""
import json
import subprocess
import sys

import pytest

from blipexp.bench import FULL, Stopwatch, met, targets


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run([sys.executable, "-m", "blipexp.bench", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
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


def test_stopwatch_counts_nested_calls_once():
    now = [0.0]

    def work(seconds):  # advances the fake clock instead of sleeping
        now[0] += seconds

    watch = Stopwatch(clock=lambda: now[0])
    inner = watch.wrap("tracking", lambda: work(1.0))
    watch.wrap("tracking", lambda: [inner() for _ in range(3)] and work(0.5))()
    watch.wrap("evaluation", lambda: work(2.0))()
    assert watch.seconds == {"tracking": 3.5, "evaluation": 2.0}, "counted twice, nested calls would add 3 s more"
