"""A comparison to look at: per image, the picture, its references, A's and B's captions, the verdict metric's score
of each and B - A, sorted by that difference (B's worst losses first). `compare` logs it as the table
`compare/<split>.json` of an evaluation run in B's experiment (promote logs the same run), and `compare --html FILE`
writes it as one self-contained page (the thumbnails inline as data: URIs)."""
from __future__ import annotations

import base64
import html
import sys
from pathlib import Path

from . import access, generation, tracking
from .assess import Comparison, Target
from .data.images import thumbnail_jpeg
from .evaluation import pictures

ROLE = "comparison"  # the run's blipexp.role


def columns(comparison: Comparison) -> dict[str, list]:
    """The table's columns but the pictures: key, references, caption_a, caption_b, <metric>_a, <metric>_b and
    difference, one row per image both models scored, sorted by the difference."""
    a, b, metric = comparison.a.scores, comparison.b.scores, comparison.metric
    mine, theirs = a.matched(b)
    score_a, score_b = a.images.of_each(metric), b.images.of_each(metric)
    rows = sorted(zip(mine, theirs), key=lambda pair: (float(score_b[pair[1]] - score_a[pair[0]]), a.keys[pair[0]]))
    return {"key": [a.keys[i] for i, _ in rows],
            "references": [" | ".join(a.references[i]) for i, _ in rows],
            "caption_a": [a.predictions[i] for i, _ in rows],
            "caption_b": [b.predictions[j] for _, j in rows],
            f"{metric}_a": [float(score_a[i]) for i, _ in rows],
            f"{metric}_b": [float(score_b[j]) for _, j in rows],
            "difference": [float(score_b[j] - score_a[i]) for i, j in rows]}


def table_name(comparison: Comparison) -> str:
    return f"compare/{comparison.a.scores.split}.json"


def log_if_allowed(comparison: Comparison, b: Target, home: Path, alpha: float, kept: str = "") -> str | None:
    """log_comparison's run id; None when this account may not log runs to B's experiment (a viewer on a secured
    server), which one line on stderr says (ending with `kept`: where the table is kept instead)."""
    refused = access.run_refusal(tracking.current_uri(), b.spec.experiment_name, "the comparison")
    if refused:
        print(f"note: {refused}{kept}", file=sys.stderr)
        return None
    return log_comparison(comparison, b, home, alpha)


def log_comparison(comparison: Comparison, b: Target, home: Path, alpha: float) -> str:
    """A run in B's experiment holding the comparison: both models as tags, every metric of each with B - A (and
    its interval and p where tested) as metrics, the verdict, and the side-by-side table. Returns its id."""
    rows = columns(comparison)
    tracking.use_experiment(b.spec.experiment_name, home)
    split = comparison.a.scores.split
    tags = {"blipexp.role": ROLE, "compared_a": comparison.a.label, "compared_b": comparison.b.label,
            "evaluated_model": comparison.b.label, "data_fingerprint": comparison.a.fingerprint,
            "profile": b.spec.profile, "compare_verdict": comparison.verdict(alpha)[:4000],
            **({"evaluated_version": f"{b.version.name}/{b.version.version}"} if b.version else {})}
    metrics = {}
    for key, difference in comparison.differences.items():
        found = {"a": difference.a, "b": difference.b, "difference": difference.difference,
                 "difference_ci_low": difference.ci_low, "difference_ci_high": difference.ci_high,
                 "p_value": difference.p_value}
        metrics.update({f"{split}_{key}_{name}": value for name, value in found.items() if value is not None})
    with tracking.new_run(f"compare-{split}", tags=tags) as run:
        run.params({"split": split, "images": comparison.images, "verdict_metric": comparison.metric,
                    "alpha": alpha, "bootstrap_resamples": comparison.resamples, **generation.settings(b.spec)})
        run.metrics(metrics)
        images = pictures(comparison.a.data, rows["key"])
        run.table({"key": rows["key"], "image": images, **{k: v for k, v in rows.items() if k != "key"}},
                  table_name(comparison))
    return run.id


def write_html(comparison: Comparison, path: Path, alpha: float) -> Path:
    """The side-by-side table as one page with nothing outside it (pictures inline), at `path`."""
    rows = columns(comparison)
    images = [base64.b64encode(thumbnail_jpeg(p)).decode() for p in pictures(comparison.a.data, rows["key"])]
    texts = list(rows)[1:]  # the columns after key and image
    head = "".join(f"<th>{html.escape(name)}</th>" for name in ["key", "image", *texts])
    body = []
    for n, key in enumerate(rows["key"]):
        cells = [html.escape(key), f'<img src="data:image/jpeg;base64,{images[n]}" alt="{html.escape(key)}">']
        cells += [_cell(name, rows[name][n]) for name in texts]
        body.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    title = f"{comparison.a.label} (A) vs {comparison.b.label} (B)"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}} td:nth-child(n+6){{text-align:right}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{comparison.images} {html.escape(comparison.a.scores.split)} images, paired; sorted by B - A on
{html.escape(comparison.metric)} (B's worst losses first)</p>
<p><b>{html.escape(comparison.verdict(alpha))}</b></p>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table></body></html>
"""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"--html {path} cannot be written ({exc.strerror}): name a file in a folder you may write "
                         "to") from exc
    return path


def _cell(name: str, value: str | float) -> str:
    if isinstance(value, float):
        return f"{value:+.4f}" if name == "difference" else f"{value:.4f}"
    return html.escape(value)
