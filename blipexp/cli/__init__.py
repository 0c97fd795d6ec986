"""The command line (`python -m blipexp`, `blipexp`): one module per command or group of commands, and what they
orchestrate (run.py: training once or sweeping; rerun.py). The top layer: it may import every other package."""
from .main import build_parser, main, resolve_spec, resume_command

__all__ = ["build_parser", "main", "resolve_spec", "resume_command"]
