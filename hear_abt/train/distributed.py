"""Process-group set-up for torchrun, and batch norm over the global batch.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR/PORT); without
them the trainer runs as one process with no process group. CUDA uses NCCL,
CPU uses gloo. Barlow Twins normalises over the batch, so under DDP every
BatchNorm must see the global batch: on CUDA we use nn.SyncBatchNorm; on CPU
(which SyncBatchNorm does not support) GlobalBatchNorm below does the same
with two autograd-aware all_reduces.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError
from .barlow import all_reduce_sum


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but torch sees no GPU; use --device cpu")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev


def setup(device: str = "auto") -> DistContext:
    """Join the torchrun process group when launched by torchrun (idempotent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        # Long timeout: the main process runs the online probe while the others wait at the next
        # collective. (No process builds the log-mel cache under torchrun: see cache_build.)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=2))
    return DistContext(rank, world, local, dev)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_gather_cat(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate every process's x along dim 0, in rank order (no grad)."""
    if not ctx.distributed:
        return x
    parts = [torch.empty_like(x) for _ in range(ctx.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def all_gather_object(obj: Any, ctx: DistContext) -> list[Any]:
    """Every process's obj, in rank order (a small picklable status)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def kept_rows(n_keep: int, local_batch: int, world_size: int) -> list[tuple[int, int]]:
    """For each rank, the (start, stop) of its local rows that fall in the
    last n_keep rows of the global batch (contiguous per-rank slices)."""
    total = local_batch * world_size
    first = max(0, total - max(0, n_keep))
    return [(min(local_batch, max(0, first - r * local_batch)), local_batch) for r in range(world_size)]


def gather_tail(x: torch.Tensor, n_keep: int, ctx: DistContext) -> torch.Tensor:
    """The last n_keep rows of the global batch (every process's x in rank
    order), on every process: the same as all_gather_cat(x, ctx)[-n_keep:]
    but only those rows cross the network, one broadcast per rank that holds
    some (no grad)."""
    if not ctx.distributed:
        return x[max(0, x.shape[0] - max(0, n_keep)):]
    parts = []
    for r, (lo, hi) in enumerate(kept_rows(n_keep, x.shape[0], ctx.world_size)):
        if hi <= lo:
            continue
        buf = x[lo:hi].contiguous() if r == ctx.rank else x.new_empty((hi - lo, *x.shape[1:]))
        dist.broadcast(buf, src=r)
        parts.append(buf)
    return torch.cat(parts) if parts else x[:0]


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose batch statistics are those of the global batch across
    processes (any device, any backend); plain BatchNorm without a process
    group or in eval mode. Same parameters and buffers as BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.ndim < 2:
            raise ValueError(f"expected at least 2-D input, got {x.ndim}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.ndim)]
        shape = [1, -1] + [1] * (x.ndim - 2)
        n = all_reduce_sum(torch.tensor(float(x.numel() // x.shape[1]), device=x.device, dtype=torch.float32))
        mean = all_reduce_sum(x.float().sum(dims)) / n
        var = all_reduce_sum(((x.float() - mean.view(shape)) ** 2).sum(dims)) / n
        y = (x.float() - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm -> SyncBatchNorm (CUDA) or GlobalBatchNorm (other
    devices), keeping the same Parameter and buffer objects."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_batchnorm(child, device))
    return out
