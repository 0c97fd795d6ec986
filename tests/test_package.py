"""The package states its own reasons and measurements: it cites no file outside the repository and no dated figure."""
from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "blipexp"


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_cites_a_file_the_repository_does_not_contain():
    cited = [f"{p.relative_to(PACKAGE)}: {m}" for p in sources()
             for m in re.findall(r"DESIGN\.md|\.\./shared", p.read_text(encoding="utf-8"))]
    assert not cited, f"state the reason in the comment and the figure in BENCHMARKS.md instead: {cited}"


def test_no_docstring_or_comment_carries_a_dated_measurement():
    dated = [f"{p.relative_to(PACKAGE)}:{i}" for p in sources()
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"\b20\d\d-\d\d-\d\d\b", line) and ("samples/s" in line or "GFLOP" in line or "measured" in line)]
    assert not dated, f"figures live in BENCHMARKS.md with the command that produced them: {dated}"
