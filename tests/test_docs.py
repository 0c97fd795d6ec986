"""The docs hold: the site builds with `mkdocs build --strict` (a broken link or anchor, or a page missing from the
navigation, fails it); every `python -m blipexp ...` command that README.md, BENCHMARKS.md and docs/ show parses with
blipexp's own argument parser and names experiments and spec fields that exist (running them all would cost the
suite too much), and so does every `--set KEY=...` in a sentence; the commands table lists every command; README's
setup and test commands are what CI runs.

In a shown command an UPPERCASE word (NAME, MODEL, KEY=VALUE, FOLDER) is a placeholder the reader fills in: it is
parsed as `0` and not looked up; `[...]` marks an optional part and `...` a repeatable one."""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXPERIMENTS, REPO, in_ci

from blipexp.cli import build_parser
from blipexp.experiment import catalog, trainer_args
from blipexp.experiment.spec import ExperimentSpec

README = REPO / "README.md"
DOCUMENTS = [README, REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`]*)`")
COMMAND = re.compile(r"(?:^|\s)-m blipexp(?=\s|$)(.*)")  # `python -m blipexp ...`, or a launcher's `-m blipexp ...`
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*|\.\.\.)$")
SHELL_END = {";", "&", "&&", "|", "||", ")", "("}
SET = re.compile(r"--set ['\"]?([\w.]+)=")  # `--set KEY=VALUE`, also in prose


def shown_commands(text: str) -> list[str]:
    """The arguments after `-m blipexp` of every command in `text`: in fenced blocks (a `\\` continuation joined,
    a `$ ` prompt dropped) and in inline code spans (which may wrap across lines). A span naming a command alone
    (`python -m blipexp caption`, in a sentence about it) refers to it: only its name is checked (as `--help`)."""
    found = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            found += [m[1] for m in COMMAND.finditer(line.strip().removeprefix("$ "))]
    prose = FENCE.sub("", text)
    for span in INLINE.findall(prose):
        found += [m[1] + (" --help" if len(m[1].split()) == 1 else "")
                  for m in COMMAND.finditer(" ".join(span.split()))]
    return found


def words(arguments: str) -> list[str]:
    """Shell words up to the command's end (`;`, `&`, `|`, a comment), usage brackets dropped, placeholders as 0."""
    lexer = shlex.shlex(arguments.replace("[", " ").replace("]", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = []
    for token in lexer:
        if token in SHELL_END:
            break
        token = token.removesuffix("...") or "..."
        if token != "...":
            tokens.append("0" if PLACEHOLDER.match(token) else token)
    return tokens


def problems(arguments: str) -> list[str]:
    """What is wrong with one shown command: it does not parse, names no experiment that exists, or sets a field
    that does not exist (or a value its type does not take)."""
    argv = words(arguments)
    parser = build_parser()
    if "-h" in argv or "--help" in argv:
        choices = _commands(parser)
        return [] if argv[0] in ("-h", "--help", *choices) else [f"no command {argv[0]!r}"]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = parser.parse_args(argv)
    except SystemExit:
        return [stderr.getvalue().strip().splitlines()[-1]]
    found, spec_class = [], ExperimentSpec
    for name in (getattr(args, "name", None) if args.command in ("show", "run", "dashboard") else None,
                 getattr(args, "experiment", None)):
        if name and name != "0":
            try:
                spec_class = catalog.load_class(name, EXPERIMENTS)
            except ValueError as exc:
                found.append(str(exc))
    for assignment in getattr(args, "overrides", []):
        key, _, value = assignment.partition("=")
        try:
            _check_override(spec_class, key, value)
        except ValueError as exc:
            found.append(str(exc))
    return found


def _check_override(spec_class: type[ExperimentSpec], key: str, value: str) -> None:
    """A ValueError unless `--set key=value` names a spec field (or a Trainer argument it passes through) and, where
    the value is not a placeholder, the field takes it."""
    if PLACEHOLDER.match(key):
        return
    given = not PLACEHOLDER.match(value)
    if key.startswith(trainer_args.PREFIX):
        name = key[len(trainer_args.PREFIX):]
        trainer_args.check_name(name)
        if given:
            trainer_args.parse(name, value)
    else:
        spec_class.field_info(key)
        if given:
            spec_class.parse_value(key, value)


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_the_checker_catches_a_bad_command():
    """Planted bad commands are caught, each for its reason; good ones (placeholders and all) pass."""
    assert problems(" run football_baseline --tiny --set learning_rate=1e-3 --set trainer.optim=adafactor") == []
    assert problems(" show NAME [--tiny] [--set KEY=VALUE ...]") == []
    assert problems(" promote NAME --version V [--require better] [--force]") == []
    assert problems(" caption models:/blip-football-tiny@champion IMAGE...") == []
    assert "no experiment 'football_baselin'" in problems(" run football_baselin --tiny")[0]
    assert "did you mean learning_rate" in problems(" run football_baseline --set learnin_rate=1e-3")[0]
    assert "cannot set epochs" in problems(" show football_baseline --set epochs=many")[0]
    assert "not a Seq2SeqTrainingArguments field" in problems(" run NAME --set trainer.no_such_argument=1")[0]
    assert "the following arguments are required: --version" in problems(" promote blip-football-tiny")[0]
    assert "unrecognized arguments: --bogus" in problems(" models --bogus")[0]
    assert "invalid choice: 'train'" in problems(" train football_baseline")[0]
    text = "Run `python -m blipexp run football_baseline\n--tiny` or\n```bash\n$ python -m blipexp show nothing \\\n" \
           "  --tiny  # a comment\nCUDA_VISIBLE_DEVICES=0 python -m blipexp list & done\n```\n`python -m blipexp.bench`"
    text += " and `python -m blipexp caption` or `python -m blipexp captions`"
    assert [words(c) for c in shown_commands(text)] == [["show", "nothing", "--tiny"], ["list"],
                                                        ["run", "football_baseline", "--tiny"],
                                                        ["caption", "--help"], ["captions", "--help"]]
    assert [problems(c) for c in shown_commands(text)[-2:]] == [[], ["no command 'captions'"]]
    assert "no experiment 'nothing'" in problems(shown_commands(text)[0])[0]


def unknown_fields(text: str) -> list[str]:
    """Why each `--set KEY=...` anywhere in `text` (a command, or a sentence about a field) names no spec field nor
    Trainer argument blipexp passes through."""
    found = []
    for key in SET.findall(text):
        try:
            _check_override(ExperimentSpec, key, "VALUE")
        except ValueError as exc:
            found.append(str(exc))
    return found


def test_the_field_check_catches_a_misspelt_field():
    assert unknown_fields("`--set learning_rate=1e-3`, `--set 'trainer.optim=adafactor'`, `--set KEY=VALUE`") == []
    assert ["did you mean learning_rate" in m for m in unknown_fields("with `--set learnin_rate=1e-3` and")] == [True]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_set_names_a_field(document):
    wrong = unknown_fields(document.read_text(encoding="utf-8"))
    assert not wrong, f"{document.name}: --set of fields that do not exist: {wrong}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shown_command_parses_and_names_what_exists(document):
    commands = shown_commands(document.read_text(encoding="utf-8"))
    wrong = {f"python -m blipexp{c}": found for c in commands if (found := problems(c))}
    assert not wrong, f"{document.name}: commands that would fail: {wrong}"


def test_the_readme_shows_every_command_and_the_docs_every_flag():
    readme = README.read_text(encoding="utf-8")
    everything = "\n".join(path.read_text(encoding="utf-8") for path in DOCUMENTS)
    commands = _commands(build_parser())
    missing = [c for c in commands if f"python -m blipexp {c}" not in readme]
    assert not missing, f"README's commands table lacks: {missing}"
    flags = {f"{c} {flag}" for c, sub in commands.items() for a in sub._actions for flag in a.option_strings
             if flag not in ("-h", "--help") and not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", everything)}
    assert not flags, f"flags no page mentions: {sorted(flags)}"


def test_the_readme_is_short_and_its_links_lead_somewhere():
    readme = README.read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 200
    assert len((REPO / "BENCHMARKS.md").read_text(encoding="utf-8").splitlines()) < 300
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", readme) if "://" not in t]
    assert targets and not [t for t in targets if t and not (REPO / t).exists()]


def test_the_readme_sets_up_and_tests_exactly_as_ci_does():
    """Its first two lines: the setup (a Python 3.11 venv, torch's CPU build, the lock, blipexp) and the tests."""
    setup, tests = FENCE.search(README.read_text(encoding="utf-8"))[1].splitlines()[:2]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    ci_lines = [line.replace(" -q ", " ") for line in ci.splitlines()]
    steps = setup.split(" && ")
    assert steps[0] == "python3.11 -m venv .venv" and "--extra-index-url https://download.pytorch.org/whl/cpu" in steps[1]
    assert steps[-1] == ".venv/bin/python -m blipexp run football_baseline --tiny"
    assert [step for step in steps[:-1] if step not in ci_lines] == []
    assert ci.rstrip().splitlines()[-1] == tests


def test_the_site_builds_strictly(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        install = "pip install --no-deps --require-hashes -r requirements.lock (the docs extra)"
        if in_ci():
            pytest.fail(f"mkdocs is required under CI=true but not installed: {install}")
        pytest.skip(f"mkdocs not installed: {install}, or set CI=true to make this a failure")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                            "-d", str(tmp_path / "site")], capture_output=True, text=True, cwd=tmp_path,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "site" / "benchmarks" / "index.html").is_file()
