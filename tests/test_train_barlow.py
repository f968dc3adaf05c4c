"""The Barlow Twins loss against the formula written out directly.

Below: value-by-value tests written to kill mutation-testing survivors (tools/mutation.py).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hear_abt.train.barlow import BarlowTwinsLoss, BarlowTwinsModel, all_reduce_sum, build_projector


def direct_loss(z1, z2, lambd):
    n, d = z1.shape
    bn = nn.BatchNorm1d(d, affine=False).double().train()
    a, b = bn(z1.double()), bn(z2.double())
    c = a.T @ b / n
    inv = sum((1 - c[i, i]) ** 2 for i in range(d))
    red = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return inv + lambd * red, inv, red


def test_loss_matches_direct_formula_and_gradients():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(16, 12, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = (z1.detach() + 0.5 * torch.randn(16, 12, generator=g, dtype=torch.float64)).requires_grad_()
    loss, terms = BarlowTwinsLoss(lambd=0.005)(z1, z2)
    ref, inv, red = direct_loss(z1, z2, 0.005)
    assert torch.allclose(loss.double(), ref, rtol=1e-5)
    assert torch.allclose(terms["invariance"].double(), inv, rtol=1e-5)
    assert torch.allclose(terms["redundancy"].double(), red, rtol=1e-5)
    ga = torch.autograd.grad(loss, (z1, z2))
    gr = torch.autograd.grad(ref, (z1, z2))
    for a, b in zip(ga, gr):
        assert torch.allclose(a.double(), b, rtol=1e-4, atol=1e-6)


def test_loss_small_for_identical_decorrelated_views_and_no_process_group_needed():
    z = torch.linalg.qr(torch.randn(64, 8, dtype=torch.float64))[0] * 8  # orthogonal columns
    z = z - z.mean(0)
    loss, terms = BarlowTwinsLoss(distributed=True)(z.float(), z.float())  # no group: no collective
    assert loss < 0.05 and terms["c"].shape == (8, 8)


def test_projector_shapes_and_model():
    p = build_projector(3072, [8192, 1048])
    assert [type(m).__name__ for m in p] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert p[0].out_features == 8192 and p[-1].out_features == 1048 and p[0].bias is None

    class Enc(nn.Module):
        output_dim = 5

        def forward(self, x):
            return x.flatten(1)[:, :5]

    z1, z2 = BarlowTwinsModel(Enc(), [7, 3])(torch.randn(4, 1, 2, 3), torch.randn(4, 1, 2, 3))
    assert z1.shape == z2.shape == (4, 3)


# ---------------------------------------------------------------------- value by value
# hear_abt/train/barlow.py value by value (written to kill mutmut's mutants;
def reference(z1: torch.Tensor, z2: torch.Tensor, lambd: float, eps: float = 1e-5):
    def bn(z):
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)

    c = bn(z1.double()).T @ bn(z2.double()) / z1.shape[0]
    inv = ((1 - c.diagonal()) ** 2).sum()
    red = (c ** 2).sum() - (c.diagonal() ** 2).sum()
    return inv + lambd * red, inv, red, c


@pytest.mark.parametrize("lambd, eps", [(0.005, 1e-5), (0.5, 1e-5), (0.005, 0.3)])
def test_loss_terms_and_c_equal_the_formula(lambd, eps):
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(10, 6, generator=g) * 3 + 2
    z2 = z1 * 0.5 + torch.randn(10, 6, generator=g)
    loss, terms = BarlowTwinsLoss(lambd=lambd, eps=eps)(z1, z2)
    ref, inv, red, c = reference(z1, z2, lambd, eps)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["invariance"].double(), inv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["redundancy"].double(), red, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["c"].double(), c, rtol=1e-5, atol=1e-6)
    assert not terms["c"].requires_grad and not terms["invariance"].requires_grad


def test_defaults_and_repr():
    loss = BarlowTwinsLoss()
    assert (loss.lambd, loss.eps, loss.distributed) == (0.005, 1e-5, False)
    assert repr(loss) == "BarlowTwinsLoss(lambd=0.005, distributed=False)"
    assert BarlowTwinsLoss(0.1, distributed=True).extra_repr() == "lambd=0.1, distributed=True"


def test_half_precision_inputs_are_computed_in_float32():
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
    loss16, _ = BarlowTwinsLoss()(z.bfloat16(), z.bfloat16())
    assert loss16.dtype == torch.float32
    ref, *_ = reference(z.bfloat16().float(), z.bfloat16().float(), 0.005)
    torch.testing.assert_close(loss16.double(), ref, rtol=1e-4, atol=1e-5)
    assert BarlowTwinsLoss()(z.double(), z.double())[0].dtype == torch.float64


@pytest.mark.parametrize("a, b", [((4, 3), (4, 2)), ((4, 3), (5, 3)), ((4,), (4,)), ((2, 3, 4), (2, 3, 4))])
def test_shape_errors(a, b):
    with pytest.raises(ValueError, match=r"^z1, z2 must both be \[batch, dim\], got"):
        BarlowTwinsLoss()(torch.zeros(a), torch.zeros(b))


def test_all_reduce_is_identity_without_a_process_group():
    x = torch.randn(3)
    assert all_reduce_sum(x) is x


@pytest.mark.parametrize("sizes, kinds", [([7], ["Linear"]), ([8, 6, 5], ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"]),
                                          ([8, 6, 7, 5], ["Linear", "BatchNorm1d", "ReLU"] * 3 + ["Linear"])])
def test_projector_layers(sizes, kinds):
    p = build_projector(5, sizes)
    assert [type(m).__name__ for m in p] == kinds
    lin = [m for m in p if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == list(zip([5, *sizes[:-1]], sizes))
    assert all(m.bias is None for m in lin)
    assert [m.num_features for m in p if isinstance(m, nn.BatchNorm1d)] == sizes[:-1]
    assert all(m.inplace for m in p if isinstance(m, nn.ReLU))


def test_model_runs_encoder_and_projector_on_each_view():
    class Enc(nn.Module):
        output_dim = 3

        def forward(self, x):
            return x.sum(-1)

    m = BarlowTwinsModel(Enc(), [4])
    assert m.projector[0].in_features == 3 and m.projector[0].out_features == 4
    v1, v2 = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    z1, z2 = m(v1, v2)
    torch.testing.assert_close(z1, m.projector(v1.sum(-1)))
    torch.testing.assert_close(z2, m.projector(v2.sum(-1)))
