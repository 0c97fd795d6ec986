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


# path -> its FLOPs per sample; the notebook's loop trains in fp32, blipexp's paths in training["precision"]
FLOPS_OF = {"notebook": "notebook_flops_per_sample", "plain": "full_flops_per_sample", "full": "full_flops_per_sample",
            "frozen": "frozen_flops_per_sample", "cached": "cached_flops_per_sample",
            "full_b8": "full_b8_flops_per_sample", "cached_b8": "cached_b8_flops_per_sample"}


def mfu(report: dict, path: str) -> float:
    """The path's model FLOP/s as a share of the measured matmul peak of the precision it trained in."""
    t = report["training"]
    used = "fp32" if path == "notebook" else t.get("precision", "fp32")
    return t[path] * t[FLOPS_OF[path]] / (report["peak"][f"{used}_gflops"] * 1e9)


def invalid_mfu(measured: float) -> str | None:
    """Why an MFU cannot be reported as a result, or None: above 100% the peak was measured too low."""
    if measured <= 1.0:
        return None
    return f"invalid: {measured:.0%} is above 100%, so the peak was measured too low (the machine's speed drifted)"


def targets(report: dict) -> list[tuple[str, str, float, float]]:
    """(target, how it is measured, measured ratio, required ratio), for the sections the report has."""
    rows = []
    if "training" in report:
        t = report["training"]
        rows.append(("full fine-tuning vs the notebook loop", "samples/s ratio", t["full"] / t["notebook"], 1.5))
        rows.append(("full fine-tuning vs a plain loop on the same batches", "samples/s ratio", t["full"] / t["plain"], 0.95))
        peak = f"share of measured {t.get('precision', 'fp32')} matmul peak"
        rows.append(("full fine-tuning MFU, batch 2", peak, mfu(report, "full"), 0.60))
        rows.append(("full fine-tuning MFU, batch 8", peak, mfu(report, "full_b8"), 0.60))
        rows.append(("cached features vs the notebook loop, both batch 2", "samples/s ratio",
                     t["cached"] / t["notebook"], 5.0))
        rows.append(("cached features at batch 8 vs the notebook loop", "samples/s ratio",
                     t["cached_b8"] / t["notebook"], 5.0))
    if "generation" in report:
        g = report["generation"]
        rows.append(("batched vs one-at-a-time generation", "captions/s ratio", g["batched"] / g["single"], 4.0))
        rows.append(("... from cached features", "captions/s ratio", g["cached_batched"] / g["cached_single"], 4.0))
    for key, model in (("sweep", "`--tiny` preset"), ("sweep_shaped", "base-shaped tiny")):
        if key in report:
            rows += _sweep_targets(report[key], model)
    if "evidence" in report:
        e = report["evidence"]
        rows.append((f"intervals of every metric, {e['resamples']} resamples of {e['images']} images",
                     "seconds (at most)", e["intervals_seconds"], 1.0))
        rows.append((f"paired comparison, {e['resamples']} resamples of {e['images']} images", "seconds (at most)",
                     e["paired_seconds"], 1.0))
        if "evaluate_cached_in_process_seconds" in e:
            rows.append(("`evaluate` read from the evaluation cache, beyond Python's imports", "seconds (at most)",
                         e["evaluate_cached_in_process_seconds"], 2.0))
    if "serving" in report:
        rows += _serving_targets(report["serving"])
    if "trial" in report:
        rows.append(("MLflow tracking overhead", "share of trial time in tracking writes (at most)",
                     report["trial"]["tracking_share"], 0.03))
        if report["trial"].get("system_metrics_seen"):
            rows.append(("MLflow system metrics overhead", "sampling thread CPU / trial time (at most)",
                         report["trial"]["system_metrics_share"], 0.03))
    return rows


def _sweep_targets(sweep: dict, model: str) -> list[tuple[str, str, float, float]]:
    from .sweeps import FAST, FULL_FT, HF

    fast, hf = sweep[FAST], sweep[HF]
    seeds = f", mean of {len(fast['seeds'])} seeds" if len(fast["seeds"]) > 1 else ""
    rows = [(f"cached + pruned sweep vs HF hyperparameter_search, {model}", f"wall-time speed-up{seeds}",
             hf["seconds"] / fast["seconds"], 3.0),
            ("... with an equal or better best objective", f"best CIDEr ratio{seeds}", fast["best"] / hf["best"], 1.0)]
    if FULL_FT in sweep:  # not in --quick
        rows.append((f"cached frozen-encoder sweep vs blipexp's full fine-tuning sweep, {model}",
                     f"best CIDEr ratio{seeds}", fast["best"] / sweep[FULL_FT]["best"], 0.95))
    return rows


def _serving_targets(serving: dict) -> list[tuple[str, str, float, float]]:
    """Dynamic batching against batching off, from the same run (needs the full grid's 16 clients)."""
    from .serving import rows_by_batching

    rows = rows_by_batching(serving)
    if (16, 1) not in rows:
        return []
    many, lone, eight = rows[(16, 1)], rows[(1, 1)], rows[(1, 8)]
    return [("serving, 16 clients x 1 image, batching on, vs 1 client x 8 images per request (off)",
             "images/s ratio", many["on"]["images_per_s"] / eight["off"]["images_per_s"], 0.7),
            ("serving, 16 clients x 1 image: p99 latency, batching on vs off", "p99 ratio (at most)",
             many["on"]["p99_ms"] / many["off"]["p99_ms"], 1.0),
            ("serving, 1 client x 1 image: median latency, batching on minus off", "ms (at most)",
             lone["on"]["p50_ms"] - lone["off"]["p50_ms"], 10.0)]


def met(name: str, measured: float, required: float) -> bool:
    if "peak" in name and invalid_mfu(measured):
        return False  # an impossible utilisation meets nothing
    return measured <= required if "at most" in name else measured >= required


def markdown(report: dict, command: str) -> str:
    m = report["machine"]
    lines = [f"Command: `{command}`  ", f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), "
             f"torch {m['torch']}{', ' + m['cuda'] if m['cuda'] else ''}  ",
             f"Date: {m['date']}, commit {m['commit']}, mode {report['size']}, total {report['seconds'] / 60:.1f} min", "",
             "| target | measure | measured | required | met |", "|---|---|---|---|---|"]
    for name, measure, measured, required in targets(report):
        shown, verdict = f"{measured:.2f}", "yes" if met(measure, measured, required) else "NO"
        if "peak" in measure and invalid_mfu(measured):
            shown, verdict = "invalid", "invalid"  # why: under the training table
        lines.append(f"| {name} | {measure} | {shown} | {required:.2f} | {verdict} |")
    lines += ["", _peak_md(report)]
    for section, write in (("training", _training_md), ("generation", _generation_md), ("trial", _trial_md),
                           ("sweep", _sweep_md), ("pruners", _pruners_md), ("data", _data_md),
                           ("adapters", _adapters_md), ("evidence", _evidence_md), ("serving", _serving_md)):
        if section in report:
            lines += [""] + write(report)
    return "\n".join(lines) + "\n"


def _peak_md(report: dict) -> str:
    p = report["peak"]
    parts = []
    for name in ("fp32", "bf16"):
        after = f", after {p[f'{name}_after']:.0f}" if p.get(f"{name}_after") else ""
        n = p[f"{name}_size"]
        parts.append(f"{name} {p[f'{name}_gflops']:.0f} GFLOP/s ({n}x{n}; lowest window there {p[f'{name}_low']:.0f}; "
                     f"best before the timed paths {p[f'{name}_before']:.0f}{after})")
    return (f"Machine limit, the best of {p['windows']} windows at each of several matmul sizes, probed before and "
            f"after the timed paths: {'; '.join(parts)}. MFU is against the peak of the precision each path "
            "trained in.")


def _training_md(report: dict) -> list[str]:
    t = report["training"]
    lines = [f"Training, {t['model']} ({t['parameters_m']:.0f} M parameters), batch {t['batch']} unless named, captions of "
              f"{t['caption_tokens'][0]} and {t['caption_tokens'][1]} tokens; {t['measured_steps']} steps timed after "
              f"{t['warmup_steps']} warm-up steps:", "",
              "| path | samples/s | GFLOP/sample | MFU |", "|---|---|---|---|"]
    if "precision" in t:
        probe = ", ".join(f"{k} {v:.3g}" for k, v in t["probe_gflops"].items())
        lines[1:1] = ["", f"blipexp's paths trained in {t['precision']} (precision=auto: {t['precision_reason']}; "
                          f"probe GFLOP/s: {probe or 'not run'}); the notebook's loop in fp32."]
    rows = [("notebook loop (fp32, AdamW, padded to %d, labels=input_ids)" % t["notebook_pad_to"], "notebook",
             "notebook_flops_per_sample"),
            ("plain loop on blipexp's padded batches (fused AdamW)", "plain", "full_flops_per_sample"),
            ("blipexp Trainer, full fine-tuning", "full", "full_flops_per_sample"),
            ("blipexp Trainer, frozen vision encoder", "frozen", "frozen_flops_per_sample"),
            ("blipexp Trainer, cached vision features", "cached", "cached_flops_per_sample"),
            ("blipexp Trainer, full fine-tuning, batch 8", "full_b8", "full_b8_flops_per_sample"),
            ("blipexp Trainer, cached vision features, batch 8", "cached_b8", "cached_b8_flops_per_sample")]
    invalid = []
    for label, key, flops in rows:
        share = mfu(report, key)
        why = invalid_mfu(share)
        invalid += [f"- {label}: {why}"] if why else []
        lines.append(f"| {label} | {t[key]:.3f} | {t[flops] / 1e9:.1f} | {'invalid' if why else f'{share:.0%}'} |")
    return lines + ([""] + invalid if invalid else [])


def _generation_md(report: dict) -> list[str]:
    g = report["generation"]
    return [f"Generation, {g['captions']} images, {g['new_tokens']} new tokens each (greedy, KV cache): "
              f"from pixels, batched {g['batched']:.2f} captions/s and one at a time {g['single']:.2f}; from cached "
              f"features, batched {g['cached_batched']:.2f} and one at a time {g['cached_single']:.2f}."]


def _trial_md(report: dict) -> list[str]:
    tr = report["trial"]
    by_kind = sorted(tr.get("tracking_by_kind", {}).items(), key=lambda item: -item[1])
    kinds = f" ({', '.join(f'{kind} {spent:.2f} s' for kind, spent in by_kind)})" if by_kind else ""
    monitor = (f"MLflow's system-metrics thread used {tr['system_metrics_cpu_seconds']:.2f} s of CPU "
               f"({tr['system_metrics_share']:.2%} of the trial's time)." if tr.get("system_metrics_seen")
               else "MLflow's system-metrics thread was not seen.")
    return [f"One tiny `football_baseline` trial ({tr['epochs']} epochs): {tr['seconds']:.1f}s; evaluation "
            f"{tr['evaluation_share']:.0%} of it, writes to MLflow (through tracking.Run) {tr['tracking_share']:.1%}"
            f"{kinds}; {monitor}"]


def _sweep_md(report: dict) -> list[str]:
    lines = []
    if "pretrained" in report:
        pt = report["pretrained"]
        lines += [f"The pretrained tiny model all trials start from ({pt['steps']} steps on {pt['images']} generated "
                  f"scenes): {_built(pt)}, before anything was timed. Its vision encoder does "
                  f"{pt['vision_share']:.0%} of a forward pass's FLOPs.", ""]
    lines += ["Tiny `football_lr_sweep`, the same search space, trial count and data (a way run over several seeds shows "
              "their means, the best's ± its standard error, and each seed below):", ""] + _sweep_table(report["sweep"])
    if "sweep_shaped" in report:
        sh = report["pretrained_shaped"]
        lines += ["", f"The same comparison from a base-shaped tiny model: {sh['image_size']} px images and "
                  f"{sh['vision_layers']} encoder layers, so that its vision encoder does {sh['vision_share']:.0%} of a "
                  f"forward pass's FLOPs, as BLIP-base's does {sh['blip_base_vision_share']:.0%} (the cache saves that "
                  f"share); the same pretraining ({sh['steps']} steps on {sh['images']} scenes: {_built(sh)}) and the "
                  "preset's search space:", ""] + _sweep_table(report["sweep_shaped"])
    return lines


def _built(pretrained: dict) -> str:
    return f"{'built in' if pretrained['built'] else 'found in the cache in'} {pretrained['seconds']:.0f} s"


def _sweep_table(sweep: dict) -> list[str]:
    lines = ["| way | seeds | wall time | best val CIDEr | trials (pruned) | best params |", "|---|---|---|---|---|---|"]
    for way, r in sweep.items():
        seeds = r.get("seeds", [r])
        if len(seeds) > 1:
            lines.append(f"| {way} | mean of {len(seeds)} | {r['seconds']:.0f} s | {r['best']:.3f} ± {r['best_se']:.3f} "
                         "| | |")
        lines += [_sweep_row(way if len(seeds) == 1 else "", run) for run in seeds]
    return lines


def _sweep_row(way: str, run: dict) -> str:
    from ..sweep import format_param

    params = ", ".join(f"{k}={format_param(v)}" for k, v in run["best_params"].items())
    pruned = f" ({run['pruned']})" if "pruned" in run else ""
    return (f"| {way} | {run.get('seed', '')} | {run['seconds']:.0f} s | {run['best']:.3f} | {run['trials']}{pruned} "
            f"| {params} |")


def _pruners_md(report: dict) -> list[str]:
    from .pruners import markdown as pruners_markdown

    return pruners_markdown(report["pruners"])


def _adapters_md(report: dict) -> list[str]:
    from .adapters import markdown as adapters_markdown

    return adapters_markdown(report["adapters"])


def _data_md(report: dict) -> list[str]:
    from .data import markdown as data_markdown

    return data_markdown(report["data"])


def _serving_md(report: dict) -> list[str]:
    from .serving import markdown as serving_markdown

    return serving_markdown(report["serving"])


def _evidence_md(report: dict) -> list[str]:
    from .evidence import markdown as evidence_markdown

    return evidence_markdown(report["evidence"])
