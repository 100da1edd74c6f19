"""Data-parallel runs under ``torchrun``: each rank owns a disjoint slice of the work.

Nothing here is needed for a single process: ``current()`` returns rank 0 of 1 unless the
``torchrun`` environment (``WORLD_SIZE`` > 1) is present, in which case it initialises the
default process group — NCCL when every local rank has its own GPU, Gloo otherwise (override with
``TEMPOLENS_DIST_BACKEND=gloo|nccl``).

Work is split by shard index (``shards[rank::world]``), so every rank writes its own shards of
the same store and the store is identical to a single-process run's. ``tempolens dashboards``
splits the statistics the same way, merges the accumulators across ranks, and rank 0 writes
the exports. The same command runs in one process, in several on one machine, or on several
machines::

    # one machine, 8 GPUs (or CPU processes: Gloo)
    torchrun --standalone --nproc_per_node 8 -m tempolens.cli collect --model google/gemma-2-2b --layer 12 \
        --sae hf://canrager/temporalSAEs/gemma-2-2B/layer_12/temporal --out /shared/run/store
    # two machines, 8 GPUs each: run on both, with NODE_RANK 0 and 1 and the address of the first
    torchrun --nnodes 2 --node_rank $NODE_RANK --nproc_per_node 8 \
        --rdzv_backend c10d --rdzv_endpoint node0.example:29500 --rdzv_id tempolens-run \
        -m tempolens.cli collect ... --out /shared/run/store
    torchrun --nnodes 2 --node_rank $NODE_RANK --nproc_per_node 8 \
        --rdzv_backend c10d --rdzv_endpoint node0.example:29500 --rdzv_id tempolens-dash \
        -m tempolens.cli dashboards --store /shared/run/store --out /shared/run/dashboards

Every node needs the same options and must see ``--out`` (and ``--store``) on a shared file
system; the corpus, model and SAE must resolve to the same files on every node (a hub id with the
same cache, or a copy at the same path). A job that dies (a node lost, a rank killed) is resumed
by running the same command again: finished shards are kept and skipped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from tempolens.errors import TempolensError

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
            self.collective(torch.distributed.barrier)

    def collective(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a collective; when another rank has died, say so in one line instead of a traceback."""
        try:
            return fn(*args, **kwargs)
        except RuntimeError as e:  # DistBackendError and Gloo/NCCL transport errors
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            reason = re.sub(r"^\[[^\]]*\]\s*", "", text)[:120]  # drop the "[.../pair.cc:553]" source location
            raise TempolensError(
                f"rank {self.rank}/{self.world} lost contact with the other ranks ({reason}); another rank probably "
                "stopped "
                "with an error shown above — fix that and rerun the same command (finished work is kept)"
            ) from e

    def gather_objects(self, obj: Any) -> list[Any] | None:
        """All ranks' ``obj`` on rank 0 (``None`` elsewhere); a list of one in a single process."""
        if not self.active:
            return [obj]
        out: list[Any] | None = [None] * self.world if self.is_main else None
        self.collective(torch.distributed.gather_object, obj, out, dst=0)
        return out

    def gather_all(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` on every rank, in rank order."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        self.collective(torch.distributed.all_gather_object, out, obj)
        return out

    def device(self, requested: str) -> str:
        """Under torchrun on GPUs every rank takes ``cuda:LOCAL_RANK`` (ranks share GPUs round-robin
        when a machine runs more ranks than it has GPUs)."""
        if self.active and requested in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank % max(torch.cuda.device_count(), 1)}"
        return requested


def current() -> Dist:
    """The distributed context, initialising the process group on first use under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(local_rank + 1)))
        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        backend = choose_backend(local_world, n_gpus, os.environ.get("TEMPOLENS_DIST_BACKEND"))
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local_rank)


def choose_backend(local_world: int, n_gpus: int, override: str | None = None) -> str:
    """``nccl`` when each of the ``local_world`` ranks of this machine has its own GPU, else ``gloo``.

    The choice depends only on the machine, never on the rank, so all ranks of a machine agree
    (ranks that disagree on the backend cannot form a working process group). ``override`` (``TEMPOLENS_DIST_BACKEND``)
    forces one; NCCL without enough GPUs is refused with a message."""
    if override:
        if override not in ("nccl", "gloo"):
            raise TempolensError(f"TEMPOLENS_DIST_BACKEND must be nccl or gloo; got {override!r}")
        if override == "nccl" and n_gpus < local_world:
            raise TempolensError(
                f"TEMPOLENS_DIST_BACKEND=nccl needs one GPU per rank: {local_world} ranks on this machine, {n_gpus} "
                "GPUs; use gloo or fewer ranks"
            )
        return override
    return "nccl" if n_gpus >= local_world >= 1 else "gloo"
