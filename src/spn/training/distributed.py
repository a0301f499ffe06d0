"""Multi-process data parallel training (``torchrun --nproc_per_node N -m spn train ...``).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` reads them and joins the process group (``gloo`` on the CPU, ``nccl``
on CUDA). Each process draws its own share of every global batch (rank-strided sampling, see
:class:`spn.data.sampling.StepSampler`), the model is wrapped in DistributedDataParallel (which
averages the gradients), and only rank 0 writes the config, the log and the checkpoints, and
holds the run directory's lock. The effective batch is ``world_size * batch_size``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name}={v!r} is not an integer") from None


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not launched by torchrun)."""
    return _env_int("WORLD_SIZE", 1)


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` -> a torch.device (``"cuda"`` picks the
    local rank's GPU). Asking for CUDA without a GPU -> RuntimeError."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available (use --device cpu)")
        if device == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device(device)
    raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")


def init_distributed(device: str = "cpu") -> DistContext:
    """Join the process group when launched with ``WORLD_SIZE > 1``; else a single-process context.

    Idempotent: an already initialised default group is reused.
    """
    world = env_world_size()
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistContext(device=dev)
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} outside [0, WORLD_SIZE={world})")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise RuntimeError(f"WORLD_SIZE={world} but {var} is not set: launch with torchrun")
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world,
                       backend=backend, device=dev)


def wrap_model(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when distributed, else ``model`` itself."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if ctx.device.type == "cuda":
        return DDP(model, device_ids=[ctx.device.index], output_device=ctx.device.index)
    return DDP(model)


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over the processes (in place; a no-op in a single process). Returns ``t``."""
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_ok(ok: bool, ctx: DistContext) -> bool:
    """Whether ``ok`` holds on every process (``ok`` itself in a single process)."""
    if not ctx.distributed:
        return bool(ok)
    flag = torch.tensor([0.0 if ok else 1.0], device=ctx.device)
    dist.all_reduce(flag, op=dist.ReduceOp.SUM)
    return float(flag.item()) == 0.0


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def cleanup(ctx: DistContext) -> None:
    """Leave the process group (when this module joined one)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
