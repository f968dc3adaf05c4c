"""Encoders against the paper's Table 1."""
from __future__ import annotations

import torch

from hear_abt.encoders import ENCODERS, build_encoder

PAPER_PARAMS = {"audiontt": 6.33e6}


def test_audiontt_matches_paper():
    enc = build_encoder("audiontt")
    n = sum(p.numel() for p in enc.parameters())
    assert abs(n - PAPER_PARAMS["audiontt"]) / PAPER_PARAMS["audiontt"] < 0.01, n
    assert enc.output_dim == 3072
    x = torch.randn(3, 1, 64, 96)
    enc.eval()
    assert enc(x).shape == (3, 3072)
    assert enc.forward_frames(x).shape == (3, 24, 3072)  # 96 frames of 10 ms -> 24 of 40 ms


def test_registry_rejects_unknown_name():
    import pytest

    with pytest.raises(ValueError, match="unknown encoder 'resnet99'.*audiontt"):
        build_encoder("resnet99")
    assert "audiontt" in ENCODERS


def test_inference_path_equals_training_graph():
    """The folded-BN eval path computes what the plain Sequential computes."""
    torch.manual_seed(0)
    enc = build_encoder("audiontt")
    for bn in (enc.features[1], enc.features[5]):  # non-trivial BN statistics
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.normal_()
        bn.bias.data.normal_()
    enc.eval()
    x = torch.randn(2, 1, 64, 101)
    with torch.no_grad():
        ref = enc.features(x).permute(0, 3, 1, 2).flatten(2)
        ref = torch.cat([ref, enc.fc(ref)], dim=-1)
        torch.testing.assert_close(enc.forward_frames(x), ref, rtol=1e-4, atol=1e-4)
