"""The command line (`python -m blipexp`, `blipexp`): the parser and dispatch (main.py), one module per command or
group of commands (experiments: list/show, run, models, promote, judge: evaluate/compare, rerun, caption: caption/
export, ui, dashboard), and what they orchestrate (run.py: training once or sweeping). The top layer: it may import
every other package but bench, its peer."""
from .args import resolve_spec
from .main import build_parser, main
from .resuming import resume_command

__all__ = ["build_parser", "main", "resolve_spec", "resume_command"]
