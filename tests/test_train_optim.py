"""LARS leaves biases and norms alone; the schedule warms up then decays."""
import math

import torch
from torch import nn

from hear_abt.train.config import TrainConfig
from hear_abt.train.optim import LARS, build_optimizer, lr_factor, split_params


def test_split_and_groups_follow_the_paper():
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    w, o = split_params(m)
    assert all(p.ndim > 1 for p in w) and all(p.ndim == 1 for p in o) and len(w) == 2 and len(o) == 4
    opt = build_optimizer(m, TrainConfig())
    g_w, g_b = opt.param_groups
    assert (g_w["lr"], g_w["weight_decay"], g_w["lars"]) == (0.4, 1e-5, True)
    assert (g_b["lr"], g_b["weight_decay"], g_b["lars"]) == (0.0048, 0.0, False)
    assert isinstance(build_optimizer(m, TrainConfig(optimizer="adamw")), torch.optim.AdamW)
    assert TrainConfig(encoder="vitc_base").resolved_optimizer == "adamw"
    assert TrainConfig(encoder="resnet18").resolved_optimizer == "lars"


def test_lars_trust_ratio_only_on_adapted_group():
    w = nn.Parameter(torch.full((2, 2), 3.0))
    b = nn.Parameter(torch.full((2,), 3.0))
    opt = LARS([dict(params=[w], lars=True, weight_decay=0.0), dict(params=[b], lars=False, weight_decay=0.0)], lr=1.0, momentum=0.0, eta=0.001)
    w.grad, b.grad = torch.full((2, 2), 5.0), torch.full((2,), 5.0)
    opt.step()
    # adapted: update = eta * ||w|| / ||g|| * g = 0.001 * 6 / 10 * 5 = 0.003
    assert torch.allclose(w, torch.full((2, 2), 3.0 - 0.003))
    assert torch.allclose(b, torch.full((2,), 3.0 - 5.0))  # plain SGD


def test_warmup_then_cosine():
    f = [lr_factor(s, 100, 10, 0.001) for s in range(100)]
    assert f[0] == 0.1 and f[9] == 1.0 and max(f) == 1.0
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert math.isclose(lr_factor(100, 100, 10, 0.001), 0.001)
