"""Training on several processes at once: which process this is, and a session that starts and
always ends the process group.

Launch with torchrun, one process per device::

    torchrun --standalone --nproc_per_node=2 -m vitlib.train --epochs 10

torchrun starts the processes and gives each ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` in its environment. :func:`session` reads them, starts the
process group (NCCL for CUDA devices, gloo otherwise) with a timeout, gives each process the GPU
of its local rank, and destroys the group however the block ends. Inside it
:func:`~vitlib.train.fit` trains data-parallel: a DistributedDataParallel replica per process,
each on its slice of every global batch (see :func:`~vitlib.train.iterate_batches`).

A process that raises leaves the job: torchrun then stops the others (and gloo's peers see the
connection close); a process that hangs inside a collective is ended by the group's timeout.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator, Sequence

import torch
import torch.distributed as dist

__all__ = ["World", "world", "launched_by_torchrun", "backend_for", "session", "main_first", "all_sum",
           "part_bounds", "DEFAULT_TIMEOUT_S"]

#: How long a collective waits for a silent peer before the process group gives up (seconds).
#: Long enough for a slow download on rank 0 or a large checkpoint; a process that raises ends
#: the job at once whatever this is.
DEFAULT_TIMEOUT_S = 600.0
_TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes: ``rank`` (0 to ``size - 1``),
    ``size`` (how many), ``local_rank`` (its index on this machine: its GPU)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs, evaluates aloud and writes checkpoints."""
        return self.rank == 0

    def __str__(self) -> str:
        return f"process {self.rank} of {self.size}"


def world() -> World:
    """The :class:`World` of the initialised process group, or a single process without one."""
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return World(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))
    return World()


def launched_by_torchrun(env: dict | None = None) -> bool:
    """True when the environment holds what torchrun gives each process (rank, size, address)."""
    env = os.environ if env is None else env
    return all(key in env for key in _TORCHRUN_ENV)


def backend_for(device: torch.device | str) -> str:
    """NCCL for CUDA devices, gloo for everything else (CPU)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def _process_device(device: torch.device | str, local_rank: int, local_size: int) -> torch.device:
    """The device of the process with ``local_rank``: ``cuda`` becomes ``cuda:<local_rank>``."""
    from .loop import resolve_device

    dev = resolve_device(device)
    if dev.type != "cuda":
        return dev
    if dev.index is not None and local_size > 1:
        raise ValueError(f"under torchrun each process takes the GPU of its local rank; give the device as 'cuda', "
                         f"not {str(device)!r} (which would put all {local_size} processes of this machine on one GPU)")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(f"torchrun started {local_size} processes on this machine, but it has {count} CUDA "
                         f"device(s); give --nproc_per_node={count} or fewer")
    return torch.device("cuda", local_rank if dev.index is None else dev.index)


@contextmanager
def session(device: torch.device | str = "cpu", *, timeout_s: float = DEFAULT_TIMEOUT_S,
            env: dict | None = None) -> Iterator[torch.device]:
    """Yield this process's device; under torchrun, inside a process group.

    Launched by torchrun (:func:`launched_by_torchrun`), it starts the process group (backend
    from :func:`backend_for`, ``timeout_s`` for every collective), sets this process's GPU (a
    device ``"cuda"`` becomes ``cuda:<LOCAL_RANK>``) and destroys the group when the block ends,
    by an exception too. Otherwise, or when a group already exists (its owner ends it), it yields
    the device and does nothing else.
    """
    env = os.environ if env is None else env
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive; received {timeout_s!r}")
    if not launched_by_torchrun(env) or (dist.is_available() and dist.is_initialized()):
        from .loop import resolve_device

        yield resolve_device(device)
        return
    if not dist.is_available():
        raise ValueError("this torch build has no torch.distributed; torchrun cannot train with it")
    local_rank = int(env["LOCAL_RANK"])
    dev = _process_device(device, local_rank, int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    else:
        from .. import smoke

        if smoke.active():
            smoke.skipped("DistributedDataParallel over NCCL", "needs a GPU per process; rehearsed over gloo")
    dist.init_process_group(backend_for(dev), timeout=timedelta(seconds=timeout_s),
                            device_id=dev if dev.type == "cuda" else None)
    try:
        yield dev
    finally:
        dist.destroy_process_group()


@contextmanager
def main_first() -> Iterator[None]:
    """Run the block on rank 0 first and on the others after it (e.g. a download into a shared
    folder); without a process group, just run it."""
    w = world()
    if w.size > 1 and not w.main:
        dist.barrier()
    yield
    if w.size > 1 and w.main:
        dist.barrier()


def all_sum(values: Sequence[float], device: torch.device | str) -> list[float]:
    """``values`` summed over all processes (float64, one all-reduce); unchanged without a group."""
    if world().size == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def part_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """``(start, stop)`` of the ``rank``-th of ``size`` consecutive, near-equal parts of ``n`` items."""
    return n * rank // size, n * (rank + 1) // size
