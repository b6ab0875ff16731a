"""Process groups under ``torchrun``: one home for joining, talking within and leaving the group.

``torchrun`` (single node ``--standalone``, or several nodes through its rendezvous) starts one process per
rank and tells each its place through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``). :func:`init` joins that group (NCCL when the rank works on a GPU, gloo on
CPU) and gives each rank its own GPU; every helper here also works in a plain single process, where it is a
no-op, so callers need no special case.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch

from . import errors
from .errors import RadioactiveError

__all__ = ["Placement", "env_world", "init", "rank_world", "barrier", "broadcast", "gather", "agree", "teardown"]


@dataclass(frozen=True)
class Placement:
    """Where this process runs: its rank, the world size and the device it should compute on."""

    rank: int
    world: int
    device: torch.device


def env_world() -> tuple[int, int, int]:
    """``(rank, world size, local rank)`` that ``torchrun`` set in the environment; ``(0, 1, 0)`` outside it."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


def rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised default group; ``(0, 1)`` when there is none."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init(device: str | torch.device, *, timeout_s: float | None = None) -> Placement:
    """Join ``torchrun``'s process group when ``WORLD_SIZE`` > 1 (else do nothing).

    Args:
        device: the device asked for (already resolved from ``auto``). On CUDA each rank takes the GPU of its
            local rank (``cuda:LOCAL_RANK``) unless an index was given, and the backend is NCCL, or gloo when
            ranks share a GPU (NCCL refuses that); on CPU gloo.
        timeout_s: how long a collective may wait for the slowest rank (torch's default when None).

    Returns:
        This process's :class:`Placement`.
    """
    device = torch.device(device)
    rank, world, local = env_world()
    if world <= 1:
        return Placement(0, 1, device)
    backend = "gloo"
    if device.type == "cuda":
        count = max(torch.cuda.device_count(), 1)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        # NCCL wants one GPU per rank; ranks sharing a GPU (an index given to all of them, or fewer GPUs than
        # local ranks) talk through gloo, which carries the same control messages.
        shared = local_world > count or (device.index is not None and local_world > 1)
        if device.index is None:
            device = torch.device("cuda", local % count)
        backend = "gloo" if shared else "nccl"
        # Object collectives on NCCL travel through the current GPU: it must be this rank's.
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        kwargs: dict[str, Any] = {}
        if timeout_s is not None:
            kwargs["timeout"] = datetime.timedelta(seconds=timeout_s)
        torch.distributed.init_process_group(backend=backend, **kwargs)
    return Placement(torch.distributed.get_rank(), torch.distributed.get_world_size(), device)


def barrier() -> None:
    """Wait until every rank gets here (no-op in a single process)."""
    if rank_world()[1] > 1:
        torch.distributed.barrier()


def broadcast(obj: Any, *, src: int = 0) -> Any:
    """``obj`` of rank ``src``, on every rank (picklable objects)."""
    if rank_world()[1] <= 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    world = rank_world()[1]
    if world <= 1:
        return [obj]
    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def agree(error: BaseException | None) -> None:
    """Make every rank stop together: raise if any rank reports an error.

    Every rank calls this at the same point with the exception it caught (or None). The rank that failed
    re-raises its own exception; the others raise the same type from :mod:`radioactive.errors` (else
    :class:`RadioactiveError`) with the failing rank's message, so no rank waits forever for a peer that
    stopped.
    """
    reports = gather(None if error is None else (type(error).__name__, str(error)))
    if error is not None:
        raise error
    for rank, report in enumerate(reports):
        if report is not None:
            name, message = report
            cls = getattr(errors, name, None)
            if not (isinstance(cls, type) and issubclass(cls, RadioactiveError)):
                cls = RadioactiveError
            try:
                peer = cls(f"rank {rank} stopped: {message}")
            except TypeError:  # a constructor that wants more than a message
                peer = RadioactiveError(f"rank {rank} stopped: {message}")
            raise peer


def teardown() -> None:
    """Leave the process group, if one was joined."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
