"""The package's shape: it states its own reasons and measurements (no file outside the repository, no dated figure),
its layers and the homes of MLflow and optuna hold (import-linter), modules and functions stay short, experiment
files use the public API, and the first layout's import paths still work."""
from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


REPO = PACKAGE.parent


def test_the_layers_and_the_homes_of_mlflow_and_optuna_hold():
    """pyproject's import-linter contracts: each package imports only the packages below it (cli and bench are peers
    at the top), MLflow only in tracking, registry, serving and bench, optuna only in sweep and bench. import-linter
    reads every import, those inside functions too."""
    linter = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(linter), "--config", str(REPO / "pyproject.toml"), "--no-cache"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 320, 60
PARSER_BUILDERS = {"build_parser"}  # an argparse table: a few lines per flag, exempt by name


def test_no_module_or_function_is_too_long():
    too_long = []
    for path in sources():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(PACKAGE)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in PARSER_BUILDERS:
                if (size := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(PACKAGE)}: {node.name}() {size} lines")
    assert not too_long, (f"split these (a module at most {MAX_MODULE_LINES} lines, a function at most "
                          f"{MAX_FUNCTION_LINES}): {too_long}")


PUBLIC = {"ExperimentSpec", "FloatRange", "IntRange", "Choice", "SearchDim", "HUB_MODEL", "HUB_DATASET",
          "load_experiment"}


def test_experiment_files_import_the_public_api_only():
    import blipexp

    assert PUBLIC <= set(blipexp.__all__) and all(hasattr(blipexp, name) for name in blipexp.__all__)
    files = sorted((REPO / "experiments").glob("*.py")) + sorted((REPO / "tests" / "experiments_sweep").glob("*.py"))
    imports = [(path.name, node) for path in files for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("blipexp")]
    assert imports, "the experiments import blipexp"
    assert [f"{name}: from {node.module}" for name, node in imports if node.module != "blipexp"] == []
    assert {alias.name for _, node in imports for alias in node.names} <= PUBLIC
    sweep = blipexp.load_experiment("football_lr_sweep", REPO / "experiments")
    assert isinstance(sweep, blipexp.ExperimentSpec) and isinstance(sweep.search_space()["learning_rate"],
                                                                     blipexp.FloatRange)


def _forget(*names: str) -> None:
    """As in a new process: `blipexp.<name>` imported afresh."""
    import blipexp

    for name in names:
        sys.modules.pop(f"blipexp.{name}", None)
        vars(blipexp).pop(name, None)


@pytest.mark.parametrize(("old", "new"), [("spec", "experiment.spec"), ("search_space", "experiment.search_space"),
                                          ("runner", "cli.run"), ("metrics", "scoring.metrics")])
def test_an_old_import_path_is_the_moved_module_and_warns_with_its_new_path(old, new):
    _forget(old)
    with pytest.warns(FutureWarning, match=rf"blipexp\.{old} moved to blipexp\.{new}: import it from there"):
        module = importlib.import_module(f"blipexp.{old}")
    moved = importlib.import_module(f"blipexp.{new}")
    assert module is moved and moved.__spec__.name == f"blipexp.{new}", "the same module, its own spec kept"
    with pytest.raises(ImportError):
        importlib.import_module("blipexp.no_such_module")


def test_an_experiment_file_of_the_first_layout_still_loads(tmp_path):
    from blipexp.experiment import catalog
    from blipexp.experiment.search_space import FloatRange

    (tmp_path / "old_layout.py").write_text('"""Hypothesis: written before the move."""\n'
                                             "from blipexp.search_space import FloatRange\n"
                                             "from blipexp.spec import ExperimentSpec\n\n\n"
                                             "class OldLayout(ExperimentSpec):\n    epochs = 2\n\n"
                                             "    def search_space(self):\n"
                                             "        return {'learning_rate': FloatRange(1e-5, 1e-3, log=True)}\n")
    _forget("spec", "search_space")
    with pytest.warns(FutureWarning, match=r"blipexp\.spec moved to blipexp\.experiment\.spec"):
        spec = catalog.load("old_layout", tmp_path)
    assert spec.epochs == 2 and isinstance(spec.search_space()["learning_rate"], FloatRange)
