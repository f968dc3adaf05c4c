"""LARS and the warm-up + cosine schedule (Barlow Twins' recipe, used by ABT).

Parameters split into two groups: weights (matrices and conv kernels) get
lr_weights, weight decay and the LARS trust ratio; biases and BatchNorm
parameters (every 1-D tensor) get lr_biases and neither. The learning rate is
a pure function of the step, so resuming needs only the step number. With
freeze_encoder_steps > 0 each group is split again into encoder and projector
parts (``encoder: True``), so the encoder's rate can be held at 0 and then
warmed up on its own.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from .config import TrainConfig


class LARS(torch.optim.Optimizer):
    """SGD with momentum where, for groups with lars=True, each tensor's update
    (gradient + weight decay) is rescaled by eta * ||w|| / ||update|| (1 when
    either norm is zero). Groups with lars=False are plain SGD + momentum."""

    def __init__(self, params: Iterable, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.001, lars: bool = True):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, lars=lars))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch.optim API)
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if g["weight_decay"]:
                    dp = dp.add(p, alpha=g["weight_decay"])
                if g["lars"]:
                    w_norm, u_norm = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(w_norm)
                    q = torch.where((w_norm > 0) & (u_norm > 0), g["eta"] * w_norm / u_norm, one)
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])


def split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights, biases_and_norms): 1-D tensors are biases or norm scales/shifts."""
    weights, others = [], []
    for p in model.parameters():
        if p.requires_grad:
            (others if p.ndim <= 1 else weights).append(p)
    return weights, others


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """LARS (conv encoders, the paper) or AdamW (ViT encoders); each group
    remembers its peak lr in 'base_lr' for the schedule. LARS rates are
    multiplied by cfg.lr_scale (lr_scaling); AdamW's is always adamw_lr x
    batch_size / 128."""
    weights, others = split_params(model)
    if cfg.resolved_optimizer == "lars":
        k = cfg.lr_scale
        groups = [dict(params=weights, lr=cfg.lr_weights * k, weight_decay=cfg.weight_decay, lars=True),
                  dict(params=others, lr=cfg.lr_biases * k, weight_decay=0.0, lars=False)]
    else:
        groups = [dict(params=weights, weight_decay=cfg.adamw_weight_decay), dict(params=others, weight_decay=0.0)]
    if cfg.freeze_encoder_steps > 0:  # only then: the groups of existing training states stay as they were
        in_encoder = {id(p) for p in model.encoder.parameters()}
        groups = [dict(g, params=[p for p in g["params"] if (id(p) in in_encoder) == enc], encoder=enc)
                  for g in groups for enc in (True, False)]
    if cfg.resolved_optimizer == "lars":
        opt = LARS(groups, lr=cfg.lr_weights * k, momentum=cfg.momentum, eta=cfg.lars_eta)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.adamw_lr * cfg.batch_size / 128)
    for g in opt.param_groups:
        g["base_lr"] = g["lr"]
    return opt


def lr_factor(step: int, total_steps: int, warmup_steps: int, final_factor: float = 0.001) -> float:
    """Linear warm-up from ~0 to 1 over warmup_steps, then cosine from 1 to
    final_factor at total_steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * t))


def encoder_factor(step: int, factor: float, freeze_steps: int, warmup_steps: int) -> float:
    """The encoder's share of the schedule: 0 while frozen, then a linear
    warm-up of its own (a jump to the full rate would undo the freeze)."""
    if step < freeze_steps:
        return 0.0
    return factor * min(1.0, (step - freeze_steps + 1) / max(1, warmup_steps))


def set_lr(opt: torch.optim.Optimizer, factor: float, encoder: float | None = None) -> None:
    """encoder: the factor for groups marked ``encoder`` (None: the same as the rest)."""
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * (encoder if encoder is not None and g.get("encoder") else factor)
