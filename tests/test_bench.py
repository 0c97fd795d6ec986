"""`python -m blipexp.bench --quick` runs every section and reports; timings are never asserted."""
import json
import subprocess
import sys

import pytest

from blipexp.bench.peak import summarize
from blipexp.bench.report import markdown, met, mfu, targets
from blipexp.bench.sizes import FULL
from blipexp.bench.trial import EvaluationClock, ThreadCpu

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop


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
    assert report["peak"]["fp32_after"] > 0, "the peak is probed again after the timed paths"
    assert report["training"]["precision"] in ("fp32", "bf16") and report["training"]["precision_reason"]
    training = report["training"]
    for path in ("notebook", "plain", "full", "frozen", "cached", "full_b8", "cached_b8"):
        assert training[path] > 0, path
    # FLOPs follow the work: padding to max_length costs more, a frozen encoder has no backward, cached none at all
    assert training["notebook_flops_per_sample"] > training["full_flops_per_sample"]
    assert training["full_flops_per_sample"] > training["frozen_flops_per_sample"] > training["cached_flops_per_sample"]
    assert all(report["generation"][k] > 0 for k in ("batched", "single", "cached_batched", "cached_single"))
    assert 0 < report["trial"]["evaluation_share"] < 1 and 0 < report["trial"]["tracking_share"] < 1
    assert report["trial"]["system_metrics_seen"] and 0 <= report["trial"]["system_metrics_share"] < 1
    assert len(report["sweep"]) == 2 and all(r["trials"] >= 1 and r["seconds"] > 0 for r in report["sweep"].values())
    assert len(report["sweep_shaped"]) == 2, "the base-shaped model: the cached sweep and HF's"
    assert all(r["trials"] >= 1 and r["seconds"] > 0 for r in report["sweep_shaped"].values())
    assert report["pretrained_shaped"]["vision_share"] > report["pretrained"]["vision_share"]
    pruners = report["pruners"]["pruners"]
    assert set(pruners) == {"median", "paired"}
    assert all(r["epochs"] >= 1 and r["seconds"] > 0 and r["test"] >= 0 for r in pruners.values())
    full, frozen, lora = report["adapters"]["ways"].values()
    assert full["trainable"] == full["total"] > frozen["trainable"] > lora["trainable"] > 0
    assert all(r["seconds_per_epoch"] > 0 and 0 <= r["best_cider"] for r in (full, frozen, lora))
    evidence = report["evidence"]
    assert evidence["images"] == 200 and evidence["intervals_seconds"] > 0 and evidence["paired_seconds"] > 0
    data = report["data"]["24"]
    assert all(data[k]["peak_rss_gib"] > 0 for k in ("load_first", "load_2_workers", "eager", "run_first"))
    assert data["load_2_workers"]["workers"] == 2 and data["run_first"]["seconds"] > 0
    assert evidence["evaluate_first_seconds"] > 0 and evidence["evaluate_cached_in_process_seconds"] > 0
    assert 0 < evidence["import_seconds"] < evidence["evaluate_first_seconds"], "the command's own imports, timed"
    assert "evaluate_cached_seconds" not in evidence, "--quick runs the evaluate command once"
    serving = report["serving"]
    assert [(r["batching"], r["clients"], r["images_per_request"]) for r in serving["load"]] == [
        (batching, clients, images) for batching in ("off", "on") for images in (1, 8) for clients in (1, 2)]
    assert all(r["images_per_s"] > 0 and r["errors"] == 0 for r in serving["load"])
    assert [r["mean_batch"] for r in serving["load"] if r["batching"] == "off"] == [1, 1, 8, 8], \
        "off, each request generates alone: its images, one call (read from the server's batch log)"
    assert all(case["ok"] for case in serving["malformed"]["cases"].values()) and serving["alive_after"]


def test_the_markdown_report_lists_every_target_with_a_verdict(quick_report):
    report, text, stdout = quick_report
    assert "python -m blipexp.bench --quick" in text and report["machine"]["cpu"] in text
    for name, _, _, _ in targets(report):
        assert f"| {name} |" in text
    assert text.count("| yes |") + text.count("| NO |") == len(targets(report))
    assert text.strip() in stdout, "the report is printed too"


def test_the_cached_evaluate_command_is_reported_when_run_and_said_not_run_otherwise():
    from blipexp.bench.evidence import SIZES, markdown as evidence_markdown

    assert SIZES["full"]["attempts"] == ("captioned", "cached"), "the full benchmark times the cached command"
    result = {"resamples": 1000, "images": 5000, "intervals_seconds": 0.1, "paired_seconds": 0.2,
              "scoring_seconds": 3.0, "evaluate_command": "python -m blipexp evaluate football_baseline --tiny",
              "evaluate_first_seconds": 12.3, "import_seconds": 6.5, "evaluate_cached_in_process_seconds": 0.14}
    assert "not run again from the evaluation cache" in "".join(evidence_markdown(result))
    text = "".join(evidence_markdown({**result, "evaluate_cached_seconds": 7.25}))
    assert "12.3 s the first time" in text and "7.2 s again from the evaluation cache" in text


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


def constructed_report(full_samples_per_second: float) -> dict:
    """A report as the training section writes it; bf16 paths, so MFU is against the bf16 peak."""
    flops = 400e9
    training = {"model": "BLIP-base (random init)", "parameters_m": 224, "batch": 2, "caption_tokens": [18, 24],
                "notebook_pad_to": 512, "warmup_steps": 2, "measured_steps": 3, "precision": "bf16",
                "precision_reason": "bf16: 1.60x fp32 in the probe (160 vs 100 GFLOP/s)",
                "probe_gflops": {"fp32": 100.0, "bf16": 160.0}, "notebook": 0.1, "notebook_flops_per_sample": 800e9}
    for key in ("plain", "full", "frozen", "cached", "full_b8", "cached_b8"):
        training[key], training[f"{key}_flops_per_sample"] = 0.2, flops
    training["full"] = full_samples_per_second
    before = {"fp32": {1024: [90.0, 100.0, 95.0]}, "bf16": {1024: [180.0, 200.0, 150.0]}}
    return {"size": "full", "seconds": 600.0, "training": training, "peak": summarize(before, before),
            "machine": {"cpu": "Some CPU", "cores": 2, "torch_threads": 2, "torch": "2", "cuda": None,
                        "date": "2026-11-23", "commit": "abc"}}


def test_mfu_is_against_the_peak_of_the_precision_used():
    report = constructed_report(0.25)
    assert report["peak"]["bf16_gflops"] == 200.0 and report["peak"]["bf16_low"] == 150.0
    assert mfu(report, "full") == 0.25 * 400 / 200, "a bf16 path against the bf16 peak"
    assert mfu(report, "notebook") == 0.1 * 800 / 100, "the notebook's fp32 loop against the fp32 peak"


def test_an_mfu_above_100_percent_is_reported_invalid_never_as_a_result():
    report = constructed_report(0.56)  # 0.56 x 400 GFLOP / 200 GFLOP/s = 112%
    text = markdown(report, "python -m blipexp.bench --only training")
    row = next(line for line in text.splitlines() if line.startswith("| full fine-tuning MFU, batch 2 |"))
    assert row.endswith("| invalid | 0.60 | invalid |")
    assert "112%" not in row and "1.12" not in text
    assert "invalid: 112% is above 100%, so the peak was measured too low" in text, "the report says why"
    assert "| blipexp Trainer, full fine-tuning | 0.560 | 400.0 | invalid |" in text
    assert not met("share of measured bf16 matmul peak", 1.12, 0.60)
    valid = markdown(constructed_report(0.25), "python -m blipexp.bench --only training")
    assert "| full fine-tuning MFU, batch 2 | share of measured bf16 matmul peak | 0.50 | 0.60 | NO |" in valid


def test_thread_cpu_counts_the_named_threads_cpu_time_only():
    import threading
    import time

    def spin(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    with ThreadCpu("busy", every_s=0.05) as busy, ThreadCpu("idle", every_s=0.05) as idle:
        threads = [threading.Thread(target=spin, args=(0.3,), name="busy"),
                   threading.Thread(target=time.sleep, args=(0.3,), name="idle")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert busy.seen and 0.1 < busy.seconds < 1.0, busy.by_thread
    assert idle.seen and idle.seconds < 0.1, idle.by_thread


def test_the_sweep_comparison_is_between_means_over_seeds_and_shows_each_seed():
    from blipexp.bench.sweeps import FAST, HF, over_seeds

    def sweep(seed, seconds, best):
        return {"seed": seed, "seconds": seconds, "best": best, "best_params": {"learning_rate": 1e-3, "epochs": 4},
                "trials": 8, "pruned": 2}

    shaped = {"seconds": 70.0, "built": True, "steps": 360, "images": 2000, "image_size": 96, "vision_layers": 4,
              "vision_share": 0.85, "blip_base_vision_share": 0.84}
    report = {**constructed_report(0.25), "sweep": {
        FAST: over_seeds([sweep(42, 20.0, 5.0), sweep(1, 30.0, 5.4)]),
        HF: over_seeds([sweep(42, 60.0, 5.1), sweep(1, 90.0, 5.3)])},
        "pretrained_shaped": shaped, "sweep_shaped": {
        FAST: over_seeds([sweep(42, 30.0, 5.0), sweep(1, 30.0, 5.2)]),
        HF: over_seeds([sweep(42, 150.0, 5.0), sweep(1, 150.0, 5.0)])}}
    rows = [(name, measured) for name, _, measured, _ in targets(report)]
    rows = rows[[name for name, _ in rows].index("cached + pruned sweep vs HF hyperparameter_search, `--tiny` preset"):]
    assert rows[:2] == [("cached + pruned sweep vs HF hyperparameter_search, `--tiny` preset", pytest.approx(75 / 25)),
                        ("... with an equal or better best objective", pytest.approx(5.2 / 5.2))]
    assert rows[2:4] == [("cached + pruned sweep vs HF hyperparameter_search, base-shaped tiny", pytest.approx(5.0)),
                         ("... with an equal or better best objective", pytest.approx(5.1 / 5.0))]
    text = markdown(report, "python -m blipexp.bench --only sweep")
    assert f"| {FAST} | mean of 2 | 25 s | 5.200 ± 0.200 | | |" in text, "the mean, ± its standard error"
    assert "|  | 1 | 30 s | 5.400 | 8 (2) | learning_rate=0.001, epochs=4 |" in text, "each seed's sweep is shown"
    assert "| wall-time speed-up, mean of 2 seeds | 3.00 | 3.00 | yes |" in text
    assert "| wall-time speed-up, mean of 2 seeds | 5.00 | 3.00 | yes |" in text
    assert "96 px images and 4 encoder layers, so that its vision encoder does 85%" in text
    assert f"| {HF} | mean of 2 | 150 s | 5.000 ± 0.000 | | |" in text, "the base-shaped model's table"


def test_the_vision_encoders_share_of_flops_follows_the_architecture():
    from blipexp.bench.pretrained import BASE_SHAPED, blip_base_vision_share, vision_share
    from blipexp.model.pretrain import RECIPE

    def share(recipe):
        model, processor = recipe.architecture()
        return vision_share(model, processor.image_processor.size["height"])

    preset, shaped, base = share(RECIPE), share(BASE_SHAPED), blip_base_vision_share()
    assert 0.5 < preset < 0.75, "the preset's encoder: 2 layers over 65 tokens"
    assert 0.8 < base < 0.9, "BLIP-base's: 12 layers over 577 tokens"
    assert abs(shaped - base) < 0.03, "the base-shaped tiny model puts BLIP-base's share in its encoder"


def test_the_pruner_comparison_alternates_the_pruners_and_pairs_each_seeds_two_sweeps(monkeypatch, tmp_path):
    import dataclasses

    from blipexp.bench import pruners
    from blipexp.bench.sizes import QUICK

    order = []

    def sweep(spec, home):  # planted results: paired trains 10 epochs fewer, 4 s faster, 0.1 better on test
        order.append((spec.pruner, spec.seed))
        paired = spec.pruner == "paired"
        return {"seconds": 10.0 - 4 * paired, "best": 5.0 + 0.4 * (spec.seed == 1), "test": 4.0 + 0.1 * paired,
                "epochs": 40 - 10 * paired, "best_params": {"learning_rate": 1e-3}, "trials": 8, "pruned": 2 + paired}

    monkeypatch.setattr(pruners, "blipexp_sweep", sweep)
    result = pruners.bench_pruners(dataclasses.replace(QUICK, sweep_seeds=(42, 1)), tmp_path, probed=tmp_path)
    assert order == [("median", 42), ("paired", 42), ("median", 1), ("paired", 1)], "a slow stretch falls on both"
    differences = result["paired_minus_median"]
    assert differences["epochs"] == {"mean": -10, "se": 0.0} and differences["test"]["mean"] == pytest.approx(0.1)
    text = markdown({**constructed_report(0.25), "pruners": result}, "python -m blipexp.bench --only pruners")
    assert "| paired | mean of 2 | 5.200 ± 0.200 | 4.100 ± 0.000 | 6 ± 0 s | 30.0 ± 0.0 | |" in text
    assert "|  | 1 | 5.400 | 4.100 | 6 s | 30 | 3 of 8 |" in text
    assert ("Paired minus median, seed by seed (mean ± standard error): best val CIDEr +0 ± 0, its test CIDEr +0.1 ± "
            "0, epochs trained -10 ± 0, seconds -4 ± 0.") in text
