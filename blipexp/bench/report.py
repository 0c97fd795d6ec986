"""The benchmark's report: the machine, the targets with their verdicts, and report.md's tables."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": datetime.date.today().isoformat(), "commit": commit}


def targets(report: dict) -> list[tuple[str, str, float, float]]:
    """(target, how it is measured, measured ratio, required ratio), for the sections the report has."""
    rows = []
    if "training" in report:
        t = report["training"]
        rows.append(("full fine-tuning vs the notebook loop", "samples/s ratio", t["full"] / t["notebook"], 1.5))
        rows.append(("full fine-tuning vs a plain loop on the same batches", "samples/s ratio", t["full"] / t["plain"], 0.95))
        rows.append(("full fine-tuning MFU, batch 2", "share of measured fp32 matmul peak", t["full_mfu"], 0.60))
        rows.append(("full fine-tuning MFU, batch 8", "share of measured fp32 matmul peak", t["full_b8_mfu"], 0.60))
        rows.append(("cached features vs the notebook loop, both batch 2", "samples/s ratio",
                     t["cached"] / t["notebook"], 5.0))
        rows.append(("cached features at batch 8 vs the notebook loop", "samples/s ratio",
                     t["cached_b8"] / t["notebook"], 5.0))
    if "generation" in report:
        g = report["generation"]
        rows.append(("batched vs one-at-a-time generation", "captions/s ratio", g["batched"] / g["single"], 4.0))
        rows.append(("... from cached features", "captions/s ratio", g["cached_batched"] / g["cached_single"], 4.0))
    if "sweep" in report:
        fast = report["sweep"]["blipexp: frozen encoder, feature cache, pruning"]
        hf = report["sweep"]["HF Trainer.hyperparameter_search (optuna), full fine-tuning"]
        rows.append(("cached + pruned sweep vs HF hyperparameter_search", "wall-time speed-up",
                     hf["seconds"] / fast["seconds"], 3.0))
        rows.append(("... with an equal or better best objective", "best CIDEr ratio", fast["best"] / hf["best"], 1.0))
    if "trial" in report:
        rows.append(("MLflow tracking overhead", "share of trial time in tracking writes (at most)",
                     report["trial"]["tracking_share"], 0.03))
    return rows


def met(name: str, measured: float, required: float) -> bool:
    return measured <= required if "at most" in name else measured >= required


def markdown(report: dict, command: str) -> str:
    m = report["machine"]
    lines = [f"Command: `{command}`  ", f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), "
             f"torch {m['torch']}{', ' + m['cuda'] if m['cuda'] else ''}  ",
             f"Date: {m['date']}, commit {m['commit']}, mode {report['size']}, total {report['seconds'] / 60:.1f} min", "",
             "| target | measure | measured | required | met |", "|---|---|---|---|---|"]
    for name, measure, measured, required in targets(report):
        ok = met(measure, measured, required)
        lines.append(f"| {name} | {measure} | {measured:.2f} | {required:.2f} | {'yes' if ok else 'NO'} |")
    lines += ["", f"Machine limit: fp32 matmul {report['peak']['fp32_gflops']:.0f} GFLOP/s (the better of two sizes, "
              f"{report['peak']['fp32_size']}), bf16 {report['peak']['bf16_gflops']:.1f} GFLOP/s; MFU below is against "
              "the fp32 figure."]
    for section, write in (("training", _training_md), ("generation", _generation_md), ("trial", _trial_md),
                           ("sweep", _sweep_md), ("data", _data_md), ("serving", _serving_md)):
        if section in report:
            lines += [""] + write(report)
    return "\n".join(lines) + "\n"


def _training_md(report: dict) -> list[str]:
    t = report["training"]
    lines = [f"Training, {t['model']} ({t['parameters_m']:.0f} M parameters), batch {t['batch']} unless named, captions of "
              f"{t['caption_tokens'][0]} and {t['caption_tokens'][1]} tokens; {t['measured_steps']} steps timed after "
              f"{t['warmup_steps']} warm-up steps:", "",
              "| path | samples/s | GFLOP/sample | MFU |", "|---|---|---|---|"]
    rows = [("notebook loop (fp32, AdamW, padded to %d, labels=input_ids)" % t["notebook_pad_to"], "notebook",
             "notebook_flops_per_sample"),
            ("plain loop on blipexp's padded batches (fused AdamW)", "plain", "full_flops_per_sample"),
            ("blipexp Trainer, full fine-tuning", "full", "full_flops_per_sample"),
            ("blipexp Trainer, frozen vision encoder", "frozen", "frozen_flops_per_sample"),
            ("blipexp Trainer, cached vision features", "cached", "cached_flops_per_sample"),
            ("blipexp Trainer, full fine-tuning, batch 8", "full_b8", "full_b8_flops_per_sample"),
            ("blipexp Trainer, cached vision features, batch 8", "cached_b8", "cached_b8_flops_per_sample")]
    for label, key, flops in rows:
        mfu = t[key] * t[flops] / (report["peak"]["fp32_gflops"] * 1e9)
        lines.append(f"| {label} | {t[key]:.3f} | {t[flops] / 1e9:.1f} | {mfu:.0%} |")
    return lines


def _generation_md(report: dict) -> list[str]:
    g = report["generation"]
    return [f"Generation, {g['captions']} images, {g['new_tokens']} new tokens each (greedy, KV cache): "
              f"from pixels, batched {g['batched']:.2f} captions/s and one at a time {g['single']:.2f}; from cached "
              f"features, batched {g['cached_batched']:.2f} and one at a time {g['cached_single']:.2f}."]


def _trial_md(report: dict) -> list[str]:
    tr = report["trial"]
    return [f"One tiny `football_baseline` trial ({tr['epochs']} epochs): {tr['seconds']:.1f}s; evaluation "
              f"{tr['evaluation_share']:.0%} of it, writes to MLflow (through tracking.Run) {tr['tracking_share']:.1%}."]


def _sweep_md(report: dict) -> list[str]:
    from ..sweep import format_param

    lines = ["Tiny `football_lr_sweep`, the same search space, trial count and data:", "",
              "| way | wall time | best val CIDEr | trials (pruned) | best params |", "|---|---|---|---|---|"]
    for way, r in report["sweep"].items():
        params = ", ".join(f"{k}={format_param(v)}" for k, v in r["best_params"].items())
        pruned = f" ({r['pruned']})" if "pruned" in r else ""
        lines.append(f"| {way} | {r['seconds']:.0f} s | {r['best']:.3f} | {r['trials']}{pruned} | {params} |")
    return lines


def _data_md(report: dict) -> list[str]:
    from .data import markdown as data_markdown

    return data_markdown(report["data"])


def _serving_md(report: dict) -> list[str]:
    from .serving import markdown as serving_markdown

    return serving_markdown(report["serving"])
