"""Blocked timestamp pooling (pooling.pool_windows) gives the same bits as
pooling the whole clip at once, the route it replaced for speed."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hear_abt import embed, pooling


def whole_clip_pool(frames: torch.Tensor, n_ts: int, before: int, after: int) -> torch.Tensor:
    """The previous pool_windows: one float64 running sum over the whole clip,
    maxima from a strided view of the -inf padded frames."""
    B, T, D = frames.shape
    before, after = min(before, n_ts - 1), min(after, T - 1)
    width = before + after + 1
    k = torch.arange(n_ts)
    hi, lo = (k + after + 1).clamp(max=T), (k - before).clamp(min=0)
    out = frames.new_empty(B, n_ts, D)
    for i in range(B):
        csum = F.pad(torch.cumsum(frames[i], dim=0, dtype=torch.float64), (0, 0, 1, 0))
        mean = (csum[hi] - csum[lo]).div_((hi - lo).to(torch.float64)[:, None])
        mx = F.pad(frames[i], (0, 0, before, max(0, n_ts - 1 + after - (T - 1))), value=float("-inf")).unfold(0, width, 1)
        torch.add(mean, mx[:n_ts].amax(-1), out=out[i])
    return out


@pytest.mark.parametrize(
    "T, n_ts, before, after",
    [(3000, 3001, 12, 11), (3000, 3000, 12, 11), (130, 131, 12, 11), (64, 65, 12, 11), (10, 11, 12, 11),
     (1, 2, 12, 11), (200, 200, 0, 0), (200, 201, 1, 0), (200, 200, 40, 3), (129, 129, 1, 70)],
)
def test_blocked_pooling_equals_whole_clip_bit_for_bit(T, n_ts, before, after):
    g = torch.Generator().manual_seed(T)
    # features of real scale and spread: ReLU outputs over several decades
    frames = torch.randn(2, T, 96, generator=g).relu_() * torch.logspace(-3, 2, 96)
    assert torch.equal(pooling.pool_windows(frames, n_ts, before, after), whole_clip_pool(frames, n_ts, before, after))


@pytest.mark.parametrize("width", [1, 2, 3, 5, 8, 24, 33])
def test_sliding_max(width):
    x = torch.randn(100, 7, generator=torch.Generator().manual_seed(width))
    torch.testing.assert_close(pooling.sliding_max(x, width), x.unfold(0, width, 1).amax(-1), rtol=0, atol=0)


def test_long_clip_timestamp_route_unchanged(model, example_wav):
    """A 60 s clip through the HEAR API equals frame features + whole-clip pooling, bit for bit."""
    import hear_abt

    x = example_wav.repeat(17)[: 60 * 16000][None]
    emb, ts = hear_abt.get_timestamp_embeddings(x, model)
    with torch.no_grad():
        frames = embed.frame_features(model.frontend, model.encoder, model.norm_mean, model.norm_std, x, model.chunk_frames)
    assert torch.equal(emb, whole_clip_pool(frames, ts.shape[1], model.window_before, model.window_after))
