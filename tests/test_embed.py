"""hear_abt/embed.py and hear_abt/pooling.py against brute-force references (written to kill mutmut's
mutants; eval/mutation.py): every pooling helper on random frames, chunked
frame features and log-mel ranges on real audio."""
from __future__ import annotations

import pytest
import torch

from hear_abt.embed import frame_features, logmel_range
from hear_abt.pooling import (
    pool_clip,
    pool_ranges,
    pool_windows,
    window_bounds,
    window_index,
    windows_hold_frames,
)


def brute_pool(frames: torch.Tensor, lo: list[int], hi: list[int]) -> torch.Tensor:
    return torch.stack([torch.stack([f[a:b].mean(0) + f[a:b].amax(0) for a, b in zip(lo, hi)]) for f in frames])


@pytest.fixture
def frames() -> torch.Tensor:
    return torch.randn(2, 17, 5, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("n_ts, before, after", [(17, 3, 2), (17, 0, 0), (18, 2, 4), (5, 40, 40), (19, 2, 0), (17, 16, 0)])
def test_pool_windows_is_mean_plus_max_of_each_clipped_window(frames, n_ts, before, after):
    T = frames.shape[1]
    lo = [max(0, k - before) for k in range(n_ts)]
    hi = [min(T, k + after + 1) for k in range(n_ts)]
    assert windows_hold_frames(n_ts, T, before, after)
    torch.testing.assert_close(pool_windows(frames, n_ts, before, after), brute_pool(frames, lo, hi))


@pytest.mark.parametrize("n_ts, T, before, after, ok", [
    (17, 17, 0, 0, True), (17, 17, 0, -1, False), (18, 17, 0, 0, False), (18, 17, 1, 0, True),
    (19, 17, 1, 0, False), (17, 17, -1, 1, False), (1, 1, 0, 0, True),
])
def test_windows_hold_frames(n_ts, T, before, after, ok):
    assert windows_hold_frames(n_ts, T, before, after) is ok


def test_pool_windows_refuses_windows_without_frames(frames):
    with pytest.raises(ValueError, match="misses all 17 frames"):
        pool_windows(frames, 19, 1, 0)


@pytest.mark.parametrize("lo, hi", [([0, 0, 3, 16, 5], [1, 4, 7, 17, 6]), ([2, 2, 2], [17, 3, 9]), ([0], [17])])
def test_pool_ranges_is_mean_plus_max_of_each_range(frames, lo, hi):
    out = pool_ranges(frames, torch.tensor(lo), torch.tensor(hi))
    assert out.dtype == frames.dtype and out.shape == (2, len(lo), 5)
    torch.testing.assert_close(out, brute_pool(frames, lo, hi))


def test_pool_clip(frames):
    torch.testing.assert_close(pool_clip(frames), frames.mean(1) + frames.amax(1))
    assert pool_clip(frames).shape == (2, 5)


@pytest.mark.parametrize("frame_ms, offset_ms, window_ms", [(40, 15, 960), (40, 15, 40), (40, 0, 80), (80, 35, 100),
                                                            (40, 15, 30), (320, 155, 960), (40, 20, 41)])
def test_window_bounds_and_index_agree_with_the_definition(frame_ms, offset_ms, window_ms):
    """Frame j (centre offset + j * frame) is in timestamp t's window iff its
    centre lies in [t - w/2, t + w/2)."""
    before, after = window_bounds(frame_ms, offset_ms, window_ms)
    n = 30
    times = torch.arange(0, n * frame_ms, frame_ms / 2, dtype=torch.float32)
    lo, hi = window_index(times, frame_ms, offset_ms, window_ms, n)
    assert lo.dtype == hi.dtype == torch.int64
    for i, t in enumerate(times.tolist()):
        inside = [j for j in range(n) if t - window_ms / 2 <= offset_ms + j * frame_ms < t + window_ms / 2]
        if inside:
            assert (lo[i].item(), hi[i].item()) == (inside[0], inside[-1] + 1), t
        else:
            nearest = min(range(n), key=lambda j: abs(offset_ms + j * frame_ms - t))
            assert (lo[i].item(), hi[i].item()) == (nearest, nearest + 1), t
        if i % 2 == 0:  # timestamps on the frame grid: window_bounds' fixed form
            k = i // 2
            expect = [j for j in range(k - before, k + after + 1) if 0 <= j < n]
            assert expect == inside, (k, before, after)


def test_logmel_range_equals_slicing_the_whole_clip(model, example_wav):
    x = torch.stack([example_wav[:20000], example_wav[5000:25000]])
    full = model.frontend(x)
    n = full.shape[-1]
    for m0, m1 in [(0, n), (0, 1), (3, 9), (n - 4, n), (60, 61)]:
        torch.testing.assert_close(logmel_range(model.frontend, x, m0, m1), full[..., m0:m1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_frame_features_in_chunks_equal_one_pass(model, example_wav, chunk):
    x = torch.stack([example_wav[:24000], example_wav[8000:32000]])
    with torch.no_grad():
        mel = (model.frontend(x) - model.norm_mean) / model.norm_std
        ref = model.encoder.forward_frames(mel.unsqueeze(1))
        out = frame_features(model.frontend, model.encoder, model.norm_mean, model.norm_std, x, chunk)
    assert out.shape == ref.shape == (2, (1 + 24000 // 160) // 4, 3072)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_frame_features_refuses_a_clip_shorter_than_a_frame(model):
    with pytest.raises(ValueError, match="clip too short: 3 mel frames, the encoder needs 4"):
        frame_features(model.frontend, model.encoder, model.norm_mean, model.norm_std, torch.zeros(1, 400), 10)
