"""One trial across several processes (`accelerate launch -m blipexp run ...`): who talks to MLflow.

Every rank builds the data and the model and trains (the Trainer runs DDP); only the main process (global
rank 0) creates the MLflow run, logs, saves and registers. Ranks are read from the environment that
`accelerate launch` / torchrun set, so a plain `python -m blipexp` is a world of one and nothing changes.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def main_process_first() -> Iterator[None]:
    """The main process runs the body first (e.g. writing generated data); the others then run it on its
    result."""
    if world_size() == 1:
        yield
        return
    with _state().main_process_first():
        yield


def from_main(value: T) -> T:
    """The main process's `value`, on every rank (e.g. its MLflow run id, which names the checkpoint folder
    that all ranks load the best model from)."""
    if world_size() == 1:
        return value
    from accelerate.utils import broadcast_object_list

    _state()
    return broadcast_object_list([value], from_process=0)[0]


def max_over_ranks(value: int) -> int:
    """The largest of every rank's `value`, on every rank (each calls it at the same point): e.g. the signal any rank
    was stopped by, so that all stop at the same step. A world of one: `value`, nothing exchanged."""
    if world_size() == 1:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], device=_state().device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def _state():
    """Accelerate's process state (joining the process group if the Trainer has not yet). On CPU it must be
    asked for: without cpu=True a GPU-less machine would come up as a world of one, and the Trainer after it."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    if state.num_processes != world_size():
        raise RuntimeError(f"accelerate sees {state.num_processes} process(es) but WORLD_SIZE is {world_size()}")
    return state
