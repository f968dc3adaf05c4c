"""Each augmentation's defining property, determinism and batch slicing."""
import math

import torch

from hear_abt.train.augment import ABTAugment, MixupBank, RandomLinearFader, RandomResizeCrop, slice_params


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def logmels(n=6, f=64, t=96, seed=0):
    return torch.randn(n, 1, f, t, generator=gen(seed))


def test_mixup_empty_bank_is_identity_and_bank_is_fifo():
    m = MixupBank(0.2, capacity=5)
    x = logmels(3)
    assert torch.equal(m(x, gen()), x)
    for k in range(3):  # push 3 batches of 3 -> the last 5 samples remain
        m.push(torch.full((3, 1, 4, 4), float(k * 3)) + torch.arange(3.0).view(3, 1, 1, 1))
    assert m.count == 5
    assert sorted(m.bank[:, 0, 0, 0].tolist()) == [4.0, 5.0, 6.0, 7.0, 8.0]
    assert "capacity=5" in repr(m)


def test_mixup_is_log_mixup_exp_with_ratio_at_most_02():
    m = MixupBank(0.2, capacity=16)
    z = torch.full((1, 1, 8, 8), 2.0)
    m.push(z)
    x = torch.zeros(64, 1, 8, 8)
    y = m(x, gen(1))
    # exp(y) = (1 - r) e^0 + r e^2  =>  r = (exp(y) - 1) / (e^2 - 1), one r per sample
    r = (y.exp() - 1) / (math.exp(2) - 1)
    assert torch.allclose(r, r[:, :, :1, :1].expand_as(r), atol=1e-6)
    r = r[:, 0, 0, 0]
    assert (r >= 0).all() and (r <= 0.2 + 1e-6).all() and r.std() > 0.02
    assert (y >= 0).all() and (y <= 2).all()  # between the two inputs


def test_mixup_state_roundtrip():
    m = MixupBank(0.2, capacity=4)
    m.push(logmels(3, 8, 8))
    m.push(logmels(3, 8, 8, seed=1))
    m2 = MixupBank(0.2, capacity=4)
    m2.load_state(m.state())
    x, p = logmels(5, 8, 8, seed=2), m.sample_params(5, gen(3))
    assert torch.equal(m.apply(x, p), m2.apply(x, p)) and m2.ptr == m.ptr


def test_resize_crop_shape_and_scale_ranges():
    rrc = RandomResizeCrop((1.0, 1.5), (0.6, 1.5), (0.6, 1.5))
    x = logmels(6)
    assert rrc(x, gen()).shape == x.shape
    p = rrc.sample_params(4000, gen())
    assert p["h"].min() >= 0.6 and p["h"].max() <= 1.0  # freq box clipped to the 1.0 canvas
    assert p["w"].min() >= 0.6 and p["w"].max() <= 1.5 and p["w"].max() > 1.45
    # the box stays on the virtual canvas: time in [-0.25, 1.25] of the input, freq in [0, 1]
    assert p["top"].min() >= -1e-9 and (p["top"] + p["h"]).max() <= 1 + 1e-9
    assert p["left"].min() >= -0.25 - 1e-9 and (p["left"] + p["w"]).max() <= 1.25 + 1e-9
    assert "bicubic" in repr(rrc)


def test_resize_crop_identity_box_and_virtual_padding():
    x = logmels(2, 16, 24)
    ident = RandomResizeCrop((1.0, 1.0), (1.0, 1.0), (1.0, 1.0))
    assert torch.allclose(ident(x, gen()), x, atol=1e-5)
    # the whole 1.5x-wide canvas squeezed into the output: the input fills the
    # middle two thirds in time, zeros (the canvas) the outer sixths
    wide = RandomResizeCrop((1.0, 1.5), (1.0, 1.0), (1.5, 1.5))
    y = wide(torch.ones(2, 1, 16, 24), gen())
    assert y[..., :3].abs().max() < 0.2 and y[..., -3:].abs().max() < 0.2
    assert torch.allclose(y[..., 6:18], torch.ones(2, 1, 16, 12), atol=1e-4)


def test_fader_is_a_monotone_line_over_time_within_gain():
    fader = RandomLinearFader(gain=1.0)
    x = logmels(50, 8, 30)
    d = fader(x, gen()) - x
    assert torch.allclose(d, d[:, :, :1, :].expand_as(d), atol=1e-6)  # same for every mel bin
    steps = d[:, 0, 0, 1:] - d[:, 0, 0, :-1]
    assert torch.allclose(steps, steps[:, :1].expand_as(steps), atol=1e-5)  # linear in time
    assert ((steps >= -1e-6).all(1) | (steps <= 1e-6).all(1)).all()  # monotone
    assert d.abs().max() <= 1.0 + 1e-6 and d.abs().max() > 0.8


def make_aug():
    return ABTAugment(MixupBank(0.2, 16), RandomResizeCrop(), RandomLinearFader())


def test_generator_only_and_slicing_equivalence():
    aug = make_aug()
    aug.mixup.push(logmels(8, seed=5))
    x = logmels(8)
    torch.manual_seed(1)
    a = aug(x, gen(7))
    torch.manual_seed(2)  # the global RNG plays no part
    assert torch.equal(a, aug(x, gen(7)))
    # What DDP relies on: params of the global batch, applied slice by slice.
    p = aug.sample_params(8, gen(9))
    full = aug.apply(x, p)
    parts = torch.cat([aug.apply(x[i : i + 4], slice_params(p, i, i + 4)) for i in (0, 4)])
    assert torch.allclose(full, parts, atol=1e-6)


def test_bank_fed_only_the_rows_it_keeps_matches_the_whole_batch():
    """What the bounded exchange relies on: pushing a batch's last `capacity`
    rows leaves the bank exactly as pushing the whole batch (one process;
    tests/test_train_multinode.py checks two)."""
    from hear_abt.train import distributed as D

    ctx = D.DistContext()
    g = torch.Generator().manual_seed(3)
    for capacity, batch in ((5, 8), (8, 8), (12, 8), (0, 4)):
        tail, whole = MixupBank(0.2, capacity), MixupBank(0.2, capacity)
        for _ in range(3):
            x = torch.randn(batch, 1, 4, 6, generator=g)
            kept = D.gather_tail(x, capacity, ctx)
            assert kept.shape[0] == min(capacity, batch)
            tail.push(kept)
            whole.push(x)
        a, b = tail.state(), whole.state()
        assert (a["count"], a["ptr"]) == (b["count"], b["ptr"])
        assert (a["bank"] is None and b["bank"] is None) or torch.equal(a["bank"], b["bank"])
    assert D.kept_rows(5, 4, 2) == [(3, 4), (0, 4)] and D.kept_rows(2, 4, 3) == [(4, 4), (4, 4), (2, 4)]
