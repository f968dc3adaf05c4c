"""hear_abt/train/optim.py value by value (written to kill mutmut's mutants;
eval/mutation.py). Kept apart from test_train_optim.py, which others edit."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hear_abt.train.config import TrainConfig
from hear_abt.train.optim import LARS, build_optimizer, lr_factor, set_lr, split_params


def test_lars_two_steps_with_decay_and_momentum():
    w = nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    opt = LARS([w], lr=0.5, weight_decay=0.1, momentum=0.9, eta=0.01)
    assert opt.defaults == dict(lr=0.5, weight_decay=0.1, momentum=0.9, eta=0.01, lars=True)
    w.grad = torch.tensor([[1.0, 0.0]])
    w0 = w.detach().clone()
    dp = w.grad + 0.1 * w0
    mu = 0.01 * w0.norm() / dp.norm() * dp
    opt.step()
    torch.testing.assert_close(w.detach(), w0 - 0.5 * mu)
    torch.testing.assert_close(opt.state[w]["mu"], mu)
    w1 = w.detach().clone()
    dp = w.grad + 0.1 * w1
    mu = 0.9 * mu + 0.01 * w1.norm() / dp.norm() * dp
    opt.step()
    torch.testing.assert_close(w.detach(), w1 - 0.5 * mu)


def test_lars_defaults_and_plain_sgd_group():
    w = nn.Parameter(torch.ones(2, 2))
    opt = LARS([w], lr=1.0)
    assert (opt.defaults["weight_decay"], opt.defaults["momentum"], opt.defaults["eta"], opt.defaults["lars"]) == (0.0, 0.9, 0.001, True)
    b = nn.Parameter(torch.ones(3))
    sgd = LARS([b], lr=0.1, momentum=0.5, lars=False, weight_decay=0.2)
    b.grad = torch.full((3,), 2.0)
    sgd.step()
    sgd.step()
    # mu1 = 2 + 0.2 = 2.2; b1 = 1 - 0.22 = 0.78; mu2 = 0.5 * 2.2 + 2 + 0.2 * 0.78; b2 = b1 - 0.1 * mu2
    mu2 = 0.5 * 2.2 + 2 + 0.2 * 0.78
    torch.testing.assert_close(b.detach(), torch.full((3,), 0.78 - 0.1 * mu2))


@pytest.mark.parametrize("w0, g", [(0.0, 1.0), (1.0, 0.0)])
def test_lars_trust_ratio_is_one_when_a_norm_is_zero(w0, g):
    w = nn.Parameter(torch.full((2, 2), w0))
    opt = LARS([w], lr=1.0, momentum=0.0, eta=0.001)
    w.grad = torch.full((2, 2), g)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((2, 2), w0 - g))


def test_lars_skips_parameters_without_gradients_and_returns_none():
    a, b = nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2, 2))
    opt = LARS([a, b], lr=1.0)
    a.grad = torch.ones(2, 2)
    assert opt.step() is None
    assert torch.equal(b.detach(), torch.ones(2, 2)) and b not in opt.state and not torch.equal(a.detach(), torch.ones(2, 2))


def test_split_params_skips_frozen_and_splits_by_rank():
    m = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    m[2].weight.requires_grad_(False)
    w, o = split_params(m)
    assert [p.shape for p in w] == [(4, 3)]
    assert [p.shape for p in o] == [(4,), (4,), (4,), (2,)]


def test_build_optimizer_groups_and_base_lr():
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    cfg = TrainConfig(lr_weights=0.3, lr_biases=0.003, weight_decay=2e-5, momentum=0.8, lars_eta=0.002)
    opt = build_optimizer(m, cfg)
    assert isinstance(opt, LARS)
    gw, gb = opt.param_groups
    assert [p.shape for p in gw["params"]] == [(4, 3)] and len(gb["params"]) == 3
    assert (gw["lr"], gw["base_lr"], gw["weight_decay"], gw["lars"], gw["momentum"], gw["eta"]) == (0.3, 0.3, 2e-5, True, 0.8, 0.002)
    assert (gb["lr"], gb["base_lr"], gb["weight_decay"], gb["lars"], gb["momentum"], gb["eta"]) == (0.003, 0.003, 0.0, False, 0.8, 0.002)
    assert set(gw) == set(gb) == {"params", "lr", "base_lr", "weight_decay", "momentum", "eta", "lars"}
    adam = build_optimizer(m, TrainConfig(optimizer="adamw", adamw_lr=1e-4, batch_size=256, adamw_weight_decay=0.06))
    assert isinstance(adam, torch.optim.AdamW)
    gw, gb = adam.param_groups
    assert gw["lr"] == gw["base_lr"] == pytest.approx(2e-4) and gb["lr"] == pytest.approx(2e-4)
    assert (gw["weight_decay"], gb["weight_decay"]) == (0.06, 0.0) and len(gw["params"]) == 1


def test_lr_factor_values():
    assert [lr_factor(s, 100, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 100, 4) == 1.0 and lr_factor(0, 100, 1) == 1.0
    assert lr_factor(52, 100, 4, 0.0) == pytest.approx(0.5)  # half-way through the cosine
    assert lr_factor(52, 100, 4, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, 100, 4) == pytest.approx(0.001) and lr_factor(500, 100, 4) == pytest.approx(0.001)
    assert lr_factor(0, 100, 0) == 1.0 and lr_factor(25, 100, 0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(0, 0, 0) == 1.0 and lr_factor(3, 2, 2) == pytest.approx(0.001)  # no cosine span: no division by 0


def test_set_lr_scales_each_groups_base():
    m = nn.Sequential(nn.Linear(3, 4))
    opt = build_optimizer(m, TrainConfig(lr_weights=0.4, lr_biases=0.004))
    set_lr(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.002]
    set_lr(opt, 1.0)
    assert [g["lr"] for g in opt.param_groups] == [0.4, 0.004]
