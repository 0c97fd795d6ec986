"""The package states its own reasons and measurements: it cites no file outside the repository and no dated figure."""
from __future__ import annotations

import ast
import importlib
import inspect
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


def test_each_name_is_imported_from_the_module_that_defines_it():
    """No module hands on a class or function of another (a re-export kept for old callers): each import names the
    module where it lives, so moving it breaks loudly. Packages (their __init__) may gather names."""
    borrowed = []
    for path in sources():
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        package = ".".join(relative.parts[:-1])  # what a relative import starts from, for a module or an __init__
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join([*parts, node.module] if node.module else parts)
            if not source.startswith("blipexp") or hasattr(module := importlib.import_module(source), "__path__"):
                continue
            for alias in node.names:
                value = getattr(module, alias.name, None)
                if (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__ != source:
                    borrowed.append(f"{relative}: {alias.name} from {source} (defined in {value.__module__})")
    assert not borrowed, f"import these from where they are defined: {borrowed}"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The blipexp modules `path` imports, at its top or inside a function alike."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join([*parts, node.module] if node.module else parts)
            found |= {f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found & modules - {name}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_two_modules_import_each_other():
    """Data flows one way: a module that needs another's helpers while that one needs it back has a third module to
    share (an import inside a function would only hide the cycle)."""
    paths = {_module_name(p): p for p in sources()}
    graph = {name: _imports(path, set(paths)) for name, path in paths.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen))
                   for nxt in graph[start])

    cycles = sorted({" <-> ".join(sorted((a, b))) for a in graph for b in graph[a] if reaches(b, a, set())})
    assert not cycles, f"import cycles: {cycles}"


# The packages that talk to MLflow: runs (tracking, with a tracking server's door: logins and permissions), the
# registry, the served model, and the benchmark, which measures a run from its store.
MLFLOW_PACKAGES = {"tracking", "registry", "serving", "bench"}


def test_only_the_tracking_registry_and_serving_modules_import_mlflow():
    importers = []
    for path in sources():
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in MLFLOW_PACKAGES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(name == "mlflow" or name.startswith("mlflow.") for name in names):
                importers.append(str(relative))
    assert not importers, f"write runs through the tracking package, versions through registry: {sorted(set(importers))}"
