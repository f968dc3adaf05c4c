"""Barlow Twins: the projector, the loss and the two-view model.

Loss (Zbontar et al. 2021; ABT uses it unchanged): batch-normalise each
view's projections, take their cross-correlation C = BN(z1)^T BN(z2) / N over
the batch, and push C towards the identity:
    invariance = sum_i (1 - C_ii)^2,   redundancy = sum_{i != j} C_ij^2,
    loss = invariance + lambda * redundancy.
The loss holds no state and calls no collective unless `distributed=True`
*and* a process group is running; then batch statistics and C are summed over
processes with an autograd-aware all_reduce, so the loss (and, after DDP's
gradient averaging, every gradient) equals the single-process one on the
global batch.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over processes (identity without a process group):
    its backward sums the gradients over processes too."""
    if not _dist_on():
        return x
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x, op=dist.ReduceOp.SUM)


def build_projector(in_dim: int, sizes: Sequence[int]) -> nn.Sequential:
    """in_dim -> [Linear, BN, ReLU] per hidden size -> Linear to sizes[-1]
    (no biases: each Linear is followed by a BN, as in Barlow Twins)."""
    dims = [int(in_dim), *map(int, sizes)]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-2], dims[1:-1]):
        layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=False))
    return nn.Sequential(*layers)


class BarlowTwinsModel(nn.Module):
    """Encoder + projector applied to both views: (v1, v2) -> (z1, z2).

    One forward for both views so DDP sees one call per step; the encoder runs
    on each view separately (its BatchNorm statistics are per view, as in the
    reference implementation)."""

    def __init__(self, encoder: nn.Module, projector_sizes: Sequence[int]):
        super().__init__()
        self.encoder = encoder
        self.projector = build_projector(encoder.output_dim, projector_sizes)

    def forward(self, v1: torch.Tensor, v2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z1 = self.projector(self.encoder(v1))  # [B, D]
        z2 = self.projector(self.encoder(v2))  # [B, D]
        return z1, z2


class BarlowTwinsLoss(nn.Module):
    """Stateless Barlow Twins loss; returns (loss, terms) where terms holds
    'invariance', 'redundancy' (detached) and 'c' (the cross-correlation,
    detached, for plots)."""

    def __init__(self, lambd: float = 0.005, eps: float = 1e-5, distributed: bool = False):
        super().__init__()
        self.lambd, self.eps, self.distributed = float(lambd), float(eps), bool(distributed)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}, distributed={self.distributed}"

    def _bn(self, z: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        # BatchNorm1d(affine=False) in training mode: biased variance, global batch.
        mean = self._sum(z.sum(0)) / n
        var = self._sum(((z - mean) ** 2).sum(0)) / n
        return (z - mean) / torch.sqrt(var + self.eps)

    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(x) if self.distributed else x

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if z1.shape != z2.shape or z1.ndim != 2:
            raise ValueError(f"z1, z2 must both be [batch, dim], got {tuple(z1.shape)} and {tuple(z2.shape)}")
        dtype = torch.promote_types(z1.dtype, torch.float32)  # bf16/fp16 -> fp32
        z1, z2 = z1.to(dtype), z2.to(dtype)
        n = self._sum(torch.tensor(float(z1.shape[0]), device=z1.device, dtype=dtype))
        c = self._sum(self._bn(z1, n).T @ self._bn(z2, n)) / n  # [D, D]
        on_diag = torch.diagonal(c)
        invariance = (1 - on_diag).pow(2).sum()
        redundancy = c.pow(2).sum() - on_diag.pow(2).sum()
        loss = invariance + self.lambd * redundancy
        return loss, {"invariance": invariance.detach(), "redundancy": redundancy.detach(), "c": c.detach()}
