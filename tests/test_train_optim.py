"""LARS leaves biases and norms alone; the schedule warms up then decays."""
import math

import torch
from torch import nn

from hear_abt.train.config import TrainConfig
from hear_abt.train.optim import LARS, build_optimizer, encoder_factor, lr_factor, split_params


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
