"""Data-parallel training across processes with ``torch.distributed`` (launched by ``torchrun``).

``torchrun --nproc_per_node N -m sparse_core train ...`` starts N processes and gives each the
environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`setup` reads them and joins the process group (``gloo`` for CPU training,
``nccl`` for CUDA, where each process takes the GPU ``cuda:LOCAL_RANK``). A plain
``python -m sparse_core train`` has none of these variables and stays a single process without a
process group, on exactly the code path of a run before this module existed.

The roles: every rank computes the loss of its shard of the global batch
(:class:`~sparse_core.lm.data.batching.TokenBatches` with ``rank``/``world_size``),
DistributedDataParallel averages the gradients, and rank 0 alone evaluates, logs, writes the
metrics and the checkpoints while the others wait at a barrier.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["Distributed", "setup", "launched_by_torchrun", "TORCHRUN_VARIABLES"]

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun(environ=None) -> bool:
    """True when the variables that ``torchrun`` sets for each worker are all present."""
    env = os.environ if environ is None else environ
    return all(env.get(k) for k in TORCHRUN_VARIABLES)


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: ``rank`` of ``world_size`` (0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over the ranks of a float tensor (itself when not distributed)."""
        if not self.enabled:
            return values
        out = values.detach().clone()
        torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
        return out / self.world_size

    def any(self, flag: bool, device: torch.device | str = "cpu") -> bool:
        """True on every rank when ``flag`` is True on at least one (a stop request, for example)."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``model`` in DistributedDataParallel (the model itself when not distributed)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)


def setup(device: str = "cpu", environ=None) -> Distributed:
    """Join the process group when launched by ``torchrun`` (once per process), else return the
    single-process :class:`Distributed` ``(0, 1)``. ``device`` ``"cpu"`` uses ``gloo``, ``"cuda"``
    uses ``nccl``."""
    env = os.environ if environ is None else environ
    if not launched_by_torchrun(env):
        return Distributed()
    dist = torch.distributed
    if not dist.is_available():
        raise RuntimeError("launched by torchrun, but this torch build has no torch.distributed")
    backend = "nccl" if device == "cuda" else "gloo"
    local_rank = int(env["LOCAL_RANK"])
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    elif dist.get_backend() != backend:
        raise RuntimeError(f"the process group uses {dist.get_backend()}, but device {device!r} needs {backend}")
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                       backend=backend)
