"""Processes and devices: torch.distributed set-up (torchrun; gloo on CPU, nccl on CUDA), the
device to train on, small collectives that are no-ops in one process, and the feature gather
that batch-coupled losses (SupCon, InfoNCE, batch statistics) compute over."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place among ``world`` training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``'auto'`` → CUDA when available, else CPU; ``'cuda'`` → this process's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def setup_distributed(device: torch.device) -> Dist:
    """This process's :class:`Dist`: the existing process group, else one initialised from
    torchrun's environment (``WORLD_SIZE > 1``), else a single process. Idempotent."""
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return Dist()
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank())


def setup(device_name: str, threads: int = 0) -> tuple[torch.device, Dist]:
    """Torch threads (0 = torch's default), the training device and the process group."""
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device_name, local_rank())
    return device, setup_distributed(device)


def native_bf16(device: torch.device, cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively: a CUDA GPU that supports bf16, or
    a Linux CPU whose flags include AVX512_BF16, AMX-BF16 or (Arm) BF16. Without them a CPU
    emulates bf16 matmuls, and bf16 autocast trains 2-4× slower than fp32 (docs/results.md §20)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_precision(precision: str, device: torch.device) -> str:
    """``precision`` with 'auto' replaced by 'bf16' where :func:`native_bf16`, else 'fp32'."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """bf16 autocast on ``device`` for ``precision='bf16'`` (or 'auto' where the device has native
    bf16, :func:`resolve_precision`); nothing for fp32."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (before reading a clock)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def broadcast_object(obj: T, d: Dist, src: int = 0) -> T:
    """``obj`` of rank ``src`` on every rank (any picklable value)."""
    if d.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(x: Tensor, d: Dist) -> Tensor:
    """Mean of ``x`` over ranks, in place."""
    if d.world > 1:
        dist.all_reduce(x, op=dist.ReduceOp.AVG)
    return x


def all_reduce_max(value: int, d: Dist) -> int:
    """Largest ``value`` over ranks (e.g. a stop request any rank has seen)."""
    if d.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def wrap_ddp(model: nn.Module, device: torch.device, d: Dist) -> nn.Module:
    """``model`` in DistributedDataParallel when there are several processes."""
    if d.world == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def no_sync(model: nn.Module, sync: bool) -> AbstractContextManager[Any]:
    """Skip DDP's gradient all-reduce for this backward unless ``sync`` (accumulation)."""
    if not sync and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return nullcontext()


class _GatherFeatures(torch.autograd.Function):
    """Forward: all-gather along dim 0 in rank order (ranks may hold different lengths).
    Backward: all-reduce (sum) the incoming gradient and return this rank's rows, i.e. the
    derivative of the sum over ranks of their losses with respect to this rank's features."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        n = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
        sizes = [torch.zeros_like(n) for _ in range(world)]
        dist.all_gather(sizes, n)
        lengths = [int(s.item()) for s in sizes]
        longest = max(lengths)
        padded = x.new_zeros((longest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        ctx.start = sum(lengths[:rank])
        ctx.length = x.shape[0]
        return torch.cat([p[:k] for p, k in zip(parts, lengths)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        g = grad.contiguous().clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        return g[ctx.start : ctx.start + ctx.length]


def gather_features(x: Tensor) -> Tensor:
    """``x (n_r, ...)`` of every process concatenated along dim 0 in rank order, with exact
    gradients; ``x`` itself in one process.

    When every rank computes the same loss over the gathered batch, DDP's gradient averaging
    then gives exactly the single-process gradient of that loss over the whole global batch.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    out: Tensor = _GatherFeatures.apply(x)
    return out
