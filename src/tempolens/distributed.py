"""Data-parallel runs under ``torchrun``: each rank owns a disjoint slice of the work.

Nothing here is needed for a single process: ``current()`` returns rank 0 of 1 unless the
``torchrun`` environment (``WORLD_SIZE`` > 1) is present, in which case it initialises the
default process group — NCCL when every rank has a GPU, Gloo otherwise.

Work is split by shard index (``shards[rank::world]``), so every rank writes its own shards of
the same store and the store is identical to a single-process run's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def split(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items`` (round-robin, so shards of every size spread evenly)."""
        return list(items[self.rank :: self.world])

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def gather_objects(self, obj: Any) -> list[Any] | None:
        """All ranks' ``obj`` on rank 0 (``None`` elsewhere); a list of one in a single process."""
        if not self.active:
            return [obj]
        out: list[Any] | None = [None] * self.world if self.is_main else None
        torch.distributed.gather_object(obj, out, dst=0)
        return out

    def gather_all(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` on every rank, in rank order."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def device(self, requested: str) -> str:
        """Under torchrun on GPUs every rank takes ``cuda:LOCAL_RANK``."""
        if self.active and requested in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return requested


def current() -> Dist:
    """The distributed context, initialising the process group on first use under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() > local_rank else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local_rank)
