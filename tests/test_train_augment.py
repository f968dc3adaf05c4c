"""Each augmentation's defining property, determinism and batch slicing.

Below: value-by-value tests written to kill mutation-testing survivors (tools/mutation.py).
"""
from __future__ import annotations

import math

import pytest
import torch

from hear_abt.train.augment import (
    ABTAugment,
    BatchAugment,
    MixupBank,
    RandomLinearFader,
    RandomResizeCrop,
    _uniform,
    slice_params,
)


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


# ---------------------------------------------------------------------- value by value
# hear_abt/train/augment.py value by value (written to kill mutmut's mutants;
def test_uniform_range_and_dtype():
    u = _uniform(1000, 2.0, 3.0, gen())
    assert u.dtype == torch.float64 and u.shape == (1000,) and u.min() >= 2.0 and u.max() < 3.0
    assert u.min() < 2.01 and u.max() > 2.99
    torch.testing.assert_close(_uniform(5, -1.0, 1.0, gen(3)), torch.rand(5, generator=gen(3), dtype=torch.float64) * 2 - 1)


def test_slice_params_nested():
    p = {"a": torch.arange(5), "b": {"c": torch.arange(5) * 2}}
    s = slice_params(p, 1, 3)
    assert s["a"].tolist() == [1, 2] and s["b"]["c"].tolist() == [2, 4]


def test_base_class_is_abstract():
    with pytest.raises(NotImplementedError):
        BatchAugment().sample_params(1, gen())
    with pytest.raises(NotImplementedError):
        BatchAugment().apply(torch.zeros(1), {})


def test_mixup_validation_defaults_and_repr():
    m = MixupBank()
    assert (m.ratio, m.capacity, m.count, m.ptr, m.bank) == (0.2, 2048, 0, 0, None)
    assert m.extra_repr() == "ratio<=0.2, capacity=2048, filled=0"
    MixupBank(ratio=0.0)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=rf"^ratio must be in \[0, 1\), got {bad}$"):
            MixupBank(ratio=bad)


def test_mixup_values():
    m = MixupBank(ratio=0.5, capacity=4)
    p = m.sample_params(3, gen(1))
    assert set(p) == {"ratio", "pick"} and p["ratio"].dtype == p["pick"].dtype == torch.float64
    assert p["ratio"].min() >= 0 and p["ratio"].max() < 0.5
    r = torch.rand(3, generator=gen(1), dtype=torch.float64) * 0.5
    torch.testing.assert_close(p["ratio"], r)
    x = torch.randn(3, 1, 2, 5, generator=gen(2))
    assert m.apply(x, p) is x  # empty bank
    bank = torch.randn(3, 1, 2, 5, generator=gen(3))
    m.push(bank)
    params = {"ratio": torch.tensor([0.1, 0.3, 0.49], dtype=torch.float64), "pick": torch.tensor([0.0, 0.5, 0.999], dtype=torch.float64)}
    out = m.apply(x, params)
    z = bank[[0, 1, 2]]
    rr = params["ratio"].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(out, torch.log((1 - rr) * x.exp() + rr * z.exp()), rtol=1e-5, atol=1e-5)
    assert MixupBank(ratio=0.0, capacity=4).apply(x, params) is x


def test_mixup_bank_is_a_fifo_ring():
    m = MixupBank(capacity=3)
    for v in range(5):
        m.push(torch.full((1, 1, 1, 2), float(v)))
    assert (m.count, m.ptr) == (3, 2) and m.bank[:, 0, 0, 0].tolist() == [3.0, 4.0, 2.0]
    m.push(torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 1, 2))  # more than capacity: keep the last 3
    assert (m.count, m.ptr) == (3, 2) and sorted(m.bank[:, 0, 0, 0].tolist()) == [1.0, 2.0, 3.0]
    assert m.extra_repr().endswith("filled=3")
    m.push(torch.zeros(2, 1, 1, 3))  # new shape: a new bank
    assert (m.count, m.ptr) == (2, 2) and m.bank.shape == (3, 1, 1, 3)
    none = MixupBank(capacity=0)
    none.push(torch.zeros(2, 1, 1, 3))
    assert none.bank is None and none.count == 0


def test_mixup_state_round_trip_and_capacity_check():
    m = MixupBank(capacity=4)
    assert m.state() == {"bank": None, "count": 0, "ptr": 0, "capacity": 4}
    m.push(torch.randn(3, 1, 2, 2, generator=gen(4)))
    st = m.state()
    assert st["bank"].shape == (3, 1, 2, 2) and (st["count"], st["ptr"]) == (3, 3)
    other = MixupBank(capacity=4)
    other.load_state(st)
    assert (other.count, other.ptr) == (3, 3) and other.bank.shape == (4, 1, 2, 2)
    assert torch.equal(other.bank[:3], m.bank[:3]) and torch.equal(other.bank[3], torch.zeros(1, 2, 2))
    empty = MixupBank(capacity=4)
    empty.push(torch.zeros(1, 1, 2, 2))
    empty.load_state({"bank": None, "count": 0, "ptr": 0, "capacity": 4})
    assert empty.bank is None and empty.count == 0
    with pytest.raises(ValueError, match=r"^memory bank capacity 4 != configured 5$"):
        MixupBank(capacity=5).load_state(st)


def test_crop_validation_defaults_and_repr():
    c = RandomResizeCrop()
    assert (c.virtual_crop, c.freq_scale, c.time_scale) == ((1.0, 1.5), (0.6, 1.5), (0.6, 1.5))
    assert c.extra_repr() == "virtual_crop=(1.0, 1.5), freq_scale=(0.6, 1.5), time_scale=(0.6, 1.5), bicubic"
    for kw in (dict(virtual_crop=(0.9, 1.5)), dict(freq_scale=(0.0, 1.0)), dict(time_scale=(-1.0, 1.0))):
        with pytest.raises(ValueError, match="^virtual_crop must be >= 1 and scales > 0$"):
            RandomResizeCrop(**kw)
    RandomResizeCrop(virtual_crop=(1.0, 1.0), freq_scale=(0.1, 0.1))


def test_crop_params_follow_the_formula():
    c = RandomResizeCrop(virtual_crop=(1.2, 2.0), freq_scale=(0.5, 1.5), time_scale=(0.7, 2.5))
    p = c.sample_params(200, gen(5))
    g = gen(5)
    h = (0.5 + torch.rand(200, generator=g, dtype=torch.float64)).clamp(max=1.2)
    w = (0.7 + 1.8 * torch.rand(200, generator=g, dtype=torch.float64)).clamp(max=2.0)
    top = torch.rand(200, generator=g, dtype=torch.float64) * (1.2 - h) - 0.1
    left = torch.rand(200, generator=g, dtype=torch.float64) * (2.0 - w) - 0.5
    for k, v in dict(h=h, w=w, top=top, left=left).items():
        torch.testing.assert_close(p[k], v)


def test_crop_apply_identity_shift_and_zoom():
    x = torch.randn(2, 1, 8, 12, generator=gen(6))
    c = RandomResizeCrop()
    one = torch.ones(2, dtype=torch.float64)
    ident = c.apply(x, {"h": one, "w": one, "top": 0 * one, "left": 0 * one})
    torch.testing.assert_close(ident, x, rtol=1e-5, atol=1e-5)
    # the right half of the time axis, stretched: column j of the output samples input column 6 + j/2
    half = c.apply(x, {"h": one, "w": 0.5 * one, "top": 0 * one, "left": 0.5 * one})
    assert half.shape == x.shape and half.dtype == x.dtype
    torch.testing.assert_close(half[..., 1::2].mean(), x[..., 6:].mean(), rtol=0.3, atol=0.3)
    down = c.apply(x, {"h": one, "w": one, "top": 0.5 * one, "left": 0 * one})  # shifted down half: zeros below
    torch.testing.assert_close(down[:, :, :4], x[:, :, 4:], rtol=1e-5, atol=1e-5)
    assert down[:, :, 4:].abs().max() < 1e-6
    right = c.apply(x, {"h": one, "w": one, "top": 0 * one, "left": 0.25 * one})
    torch.testing.assert_close(right[..., :9], x[..., 3:], rtol=1e-5, atol=1e-5)
    assert c.apply(x.double(), {"h": one, "w": one, "top": 0 * one, "left": 0 * one}).dtype == torch.float64


def test_fader_values_defaults_and_repr():
    f = RandomLinearFader()
    assert f.gain == 1.0 and f.extra_repr() == "gain=1.0"
    f = RandomLinearFader(gain=2.0)
    p = f.sample_params(500, gen(7))
    assert set(p) == {"head", "tail"} and p["head"].abs().max() <= 2.0 and p["head"].min() < -1.9 and p["tail"].max() > 1.9
    assert not torch.equal(p["head"], p["tail"])
    x = torch.randn(2, 1, 3, 5, generator=gen(8))
    params = {"head": torch.tensor([1.0, -2.0], dtype=torch.float64), "tail": torch.tensor([3.0, 0.0], dtype=torch.float64)}
    out = f.apply(x, params)
    line = torch.tensor([[1.0, 1.5, 2.0, 2.5, 3.0], [-2.0, -1.5, -1.0, -0.5, 0.0]]).view(2, 1, 1, 5)
    torch.testing.assert_close(out, x + line)


def test_abt_augment_order_and_forward():
    mix, crop, fade = MixupBank(ratio=0.4, capacity=4), RandomResizeCrop(), RandomLinearFader()
    aug = ABTAugment(mix, crop, fade)
    mix.push(torch.randn(4, 1, 8, 12, generator=gen(9)))
    x = torch.randn(3, 1, 8, 12, generator=gen(10))
    p = aug.sample_params(3, gen(11))
    assert list(p) == ["mixup", "crop", "fader"]
    g = gen(11)
    expect = {"mixup": mix.sample_params(3, g), "crop": crop.sample_params(3, g), "fader": fade.sample_params(3, g)}
    for k in p:
        for kk in p[k]:
            assert torch.equal(p[k][kk], expect[k][kk])
    out = aug.apply(x, p)
    torch.testing.assert_close(out, fade.apply(crop.apply(mix.apply(x, p["mixup"]), p["crop"]), p["fader"]))
    torch.testing.assert_close(aug(x, gen(11)), out)
    torch.testing.assert_close(fade(x, gen(12)), fade.apply(x, fade.sample_params(3, gen(12))))


# ---- added for the 2026-11-27 run's survivors (docs/dev/mutation.md)

def test_mixup_pick_of_one_stays_in_the_filled_part():
    """pick is a fraction in [0, 1); a pick of exactly 1 (float rounding of
    pick * count can reach count) must take the last filled entry, never the
    empty slot after it."""
    m = MixupBank(ratio=0.5, capacity=4)
    bank = torch.randn(3, 1, 2, 5, generator=gen(20)) + 5.0  # 3 of 4 slots filled; slot 3 is zeros
    m.push(bank)
    x = torch.randn(1, 1, 2, 5, generator=gen(21))
    r = torch.tensor([0.4], dtype=torch.float64)
    out = m.apply(x, {"ratio": r, "pick": torch.tensor([1.0], dtype=torch.float64)})
    last = m.apply(x, {"ratio": r, "pick": torch.tensor([0.99], dtype=torch.float64)})  # entry 2
    torch.testing.assert_close(out, last)
    torch.testing.assert_close(out, torch.log(0.6 * x.exp() + 0.4 * bank[2:3].exp()), rtol=1e-5, atol=1e-5)


def test_mixup_ratio_zero_leaves_the_input_whatever_the_params():
    m = MixupBank(ratio=0.0, capacity=4)
    m.push(torch.randn(4, 1, 2, 5, generator=gen(22)))
    x = torch.randn(2, 1, 2, 5, generator=gen(23))
    params = {"ratio": torch.tensor([0.3, 0.6], dtype=torch.float64), "pick": torch.tensor([0.1, 0.7], dtype=torch.float64)}
    assert m.apply(x, params) is x


def test_half_precision_input_keeps_its_dtype():
    """Under bf16 autocast the views are bf16 while the bank is float32: the
    output must stay bf16 (the bank entry and the line are cast to x's dtype)."""
    m = MixupBank(ratio=0.5, capacity=4)
    m.push(torch.randn(4, 1, 2, 5, generator=gen(24)))
    x = torch.randn(2, 1, 2, 5, generator=gen(25)).bfloat16()
    params = {"ratio": torch.tensor([0.3, 0.4], dtype=torch.float64), "pick": torch.tensor([0.1, 0.9], dtype=torch.float64)}
    assert m.bank.dtype == torch.float32 and m.apply(x, params).dtype == torch.bfloat16
    f = RandomLinearFader()
    out = f.apply(x, {"head": torch.tensor([1.0, -1.0], dtype=torch.float64), "tail": torch.tensor([0.5, 0.0], dtype=torch.float64)})
    assert out.dtype == torch.bfloat16


def test_fader_tail_spans_both_signs():
    p = RandomLinearFader(gain=2.0).sample_params(500, gen(26))
    assert p["tail"].min() < -1.9 and p["tail"].max() > 1.9 and p["head"].max() > 1.9


def test_everything_runs_on_the_input_device():
    """The 'meta' device stands in for a GPU: any tensor left on the CPU next to
    a tensor on another device raises, so every parameter must follow x."""
    meta = torch.device("meta")
    x = torch.zeros(2, 1, 8, 12, device=meta)
    aug = ABTAugment(MixupBank(ratio=0.4, capacity=4), RandomResizeCrop(), RandomLinearFader())
    aug.mixup.push(torch.zeros(4, 1, 8, 12, device=meta))
    out = aug.apply(x, aug.sample_params(2, gen(27)))
    assert out.device == meta and out.shape == x.shape
    st = MixupBank(capacity=4)
    st.push(torch.randn(3, 1, 8, 12, generator=gen(28)))
    moved = MixupBank(capacity=4)
    moved.load_state(st.state(), device="meta")
    assert moved.bank.device == meta and moved.bank.shape == (4, 1, 8, 12) and moved.count == 3


def test_crop_is_bicubic_without_warnings_and_ignores_the_default_dtype():
    """Bicubic interpolation overshoots at a step edge (bilinear never leaves
    the input's range); torch warns when align_corners is left unset; and the
    box maths stays float32 when a user switched torch's default dtype."""
    import warnings

    x = torch.zeros(1, 1, 8, 12)
    x[..., 6:] = 1.0
    one = torch.ones(1, dtype=torch.float64)
    zoom = {"h": one, "w": 0.3 * one, "top": 0 * one, "left": 0.33 * one}  # the edge, stretched
    c = RandomResizeCrop()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = c.apply(x, zoom)
    assert out.max() > 1.02 and out.min() < -0.02
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        again = c.apply(x, zoom)
    finally:
        torch.set_default_dtype(old)
    torch.testing.assert_close(again, out)
