"""The Barlow Twins loss against the formula written out directly."""
import torch
from torch import nn

from hear_abt.train.barlow import BarlowTwinsLoss, BarlowTwinsModel, build_projector


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
