"""`list` and `show`: the experiments of a folder, and one's resolved spec."""
from __future__ import annotations

import argparse
import dataclasses

from ..experiment import catalog
from .args import resolve_spec


def cmd_list(args: argparse.Namespace) -> int:
    directory = catalog.experiments_dir(args.experiments)
    found = catalog.names(directory)
    if not found:
        print(f"no experiments in {directory}")
        return 0
    width = max(map(len, found))
    for name in found:
        try:
            spec = catalog.load(name, directory)
            kind = "sweep" if spec.search_space() else "single"
            print(f"{name:<{width}}  [{kind}] model={spec.model} dataset={spec.dataset}\n{'':<{width}}  {spec.hypothesis}")
        except ValueError as exc:
            print(f"{name:<{width}}  BROKEN: {exc}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    spec = resolve_spec(args)
    defaults = type(spec)()
    print(f"{spec.name}  ({type(spec).__name__}{', tiny profile' if args.tiny else ''})")
    print(f"hypothesis: {spec.hypothesis}\n")
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        mark = "*" if value != getattr(defaults, f.name) else " "
        print(f"{mark} {f.name:<28} {value!r:<40} {f.metadata.get('help', '')}")
    space = spec.search_space()
    if space:
        print("\nsearch space:")
        for key, dim in space.items():
            print(f"  {key:<26} {dim}")
    print("\n* differs from the experiment's default")
    return 0
