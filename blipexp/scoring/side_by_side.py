"""A comparison to look at: per image, the picture, its references, A's and B's captions, the verdict metric's score
of each and B - A, sorted by that difference (B's worst losses first). `compare --html FILE` writes it as one
self-contained page (the thumbnails inline as data: URIs); tracking/comparisons.py logs the same table as
`compare/<split>.json` of a run in B's experiment."""
from __future__ import annotations

import base64
import html
from pathlib import Path

from ..data.images import thumbnail_jpeg
from .assess import Comparison
from .evaluation import pictures


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
