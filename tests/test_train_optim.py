"""LARS leaves biases and norms alone; the schedule warms up then decays.

Below: value-by-value tests written to kill mutation-testing survivors (tools/mutation.py).
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hear_abt.train.config import TrainConfig
from hear_abt.train.optim import LARS, build_optimizer, encoder_factor, lr_factor, set_lr, split_params


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


def test_lr_scaling_linear_follows_the_batch_and_none_keeps_the_rates(capsys):
    import json

    import pytest

    from hear_abt.train.__main__ import main

    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    assert TrainConfig().lr_scaling == "none"
    for batch, scale in ((128, 1.0), (2048, 1.0)):
        g_w, g_b = build_optimizer(m, TrainConfig(batch_size=batch)).param_groups
        assert (g_w["lr"], g_b["lr"], g_w["base_lr"]) == (0.4 * scale, 0.0048 * scale, 0.4 * scale)
    for batch in (128, 256, 2048):
        g_w, g_b = build_optimizer(m, TrainConfig(batch_size=batch, lr_scaling="linear", lr_weights=0.2)).param_groups
        assert math.isclose(g_w["lr"], 0.2 * batch / 256) and math.isclose(g_b["lr"], 0.0048 * batch / 256)
        assert g_w["base_lr"] == g_w["lr"]  # the schedule scales from the scaled peak
    with pytest.raises(ValueError, match="lr_scaling must be one of none, linear, got 'sqrt'"):
        TrainConfig(lr_scaling="sqrt")
    with pytest.raises(ValueError, match="applies to LARS"):
        TrainConfig(lr_scaling="linear", optimizer="adamw")
    main(["--lr-scaling", "linear", "--batch-size", "1024", "--print-config"])
    printed = json.loads(capsys.readouterr().out)
    assert (printed["lr_scaling"], printed["batch_size"]) == ("linear", 1024)
    main(["--print-config"])
    assert json.loads(capsys.readouterr().out)["lr_scaling"] == "none"


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


def test_encoder_factor_holds_then_warms_up_on_its_own():
    assert [encoder_factor(s, 0.5, freeze_steps=3, warmup_steps=4) for s in range(3)] == [0.0, 0.0, 0.0]
    assert [encoder_factor(s, 0.5, 3, 4) for s in (3, 4, 6, 9)] == [0.125, 0.25, 0.5, 0.5]


def test_frozen_encoder_stays_put_while_the_projector_learns(tiny_config, tmp_path):
    """freeze_encoder_steps=2: after 2 steps the encoder's parameters are the
    initial ones and the projector's are not; after 4 the encoder has moved.
    The same run resumed across the boundary ends where an uninterrupted one does."""
    from hear_abt.encoders import build_encoder
    from hear_abt.train import loop
    from hear_abt.train.barlow import BarlowTwinsModel
    from hear_abt.train.data import derive_seed

    cfg = tiny_config(run_dir=str(tmp_path / "a"), steps=4, freeze_encoder_steps=2, ckpt_every=0,
                      encoder_kwargs={"dropout": 0.0}, warmup_epochs=0)
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    initial = BarlowTwinsModel(build_encoder(cfg.encoder, **cfg.encoder_kwargs), cfg.projector)
    names = [n for n, _ in initial.named_parameters()]
    start = dict(initial.named_parameters())
    loop.train(cfg, stop_at=2)
    at2 = torch.load(loop.state_path(cfg.run_dir), weights_only=True)
    assert at2["step"] == 2
    for n in names:
        same = torch.equal(at2["model"][n], start[n].detach())
        assert same == n.startswith("encoder."), n
    loop.train(cfg, resume=True)
    at4 = torch.load(loop.state_path(cfg.run_dir), weights_only=True)
    moved = [n for n in names if n.startswith("encoder.") and not torch.equal(at4["model"][n], at2["model"][n])]
    assert len(moved) > len([n for n in names if n.startswith("encoder.")]) // 2

    straight = tiny_config(run_dir=str(tmp_path / "b"), steps=4, freeze_encoder_steps=2, ckpt_every=0,
                           encoder_kwargs={"dropout": 0.0}, warmup_epochs=0)
    loop.train(straight)
    end = torch.load(loop.state_path(straight.run_dir), weights_only=True)
    for n in names:
        assert torch.equal(end["model"][n], at4["model"][n]), n


# ---------------------------------------------------------------------- value by value
# hear_abt/train/optim.py value by value (written to kill mutmut's mutants;
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
