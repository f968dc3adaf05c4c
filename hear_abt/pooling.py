"""Pooling of encoder frame features into embeddings: which frames each
timestamp's window holds, and their mean + max, per window or over the clip.

Pure tensor operations with no model in sight, so the model (which needs the
window bounds) and the embedding route (which pools) both import this module
and neither imports the other back. Long clips cost the same per second as
short ones: timestamp pooling works on blocks of timestamps whose
temporaries stay in cache (a 120 s clip's float64 running sums would be
74 MB per pass otherwise).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Timestamps pooled per block: 64 x 3072 float64 running sums (1.5 MB) stay
# in L2; 3x faster than whole-clip temporaries at 120 s on 2 cores.
POOL_BLOCK = 64


def window_bounds(frame_ms: float, offset_ms: float, window_ms: float) -> tuple[int, int]:
    """Frame j (centre offset_ms + j * frame_ms) is in the window of timestamp k
    (centre k * frame_ms) iff k - before <= j <= k + after."""
    half = window_ms / 2
    return math.floor((half + offset_ms) / frame_ms), math.ceil((half - offset_ms) / frame_ms) - 1


def windows_hold_frames(n_timestamps: int, n_frames: int, before: int, after: int) -> bool:
    """Whether every fixed window [k - before, k + after], k < n_timestamps,
    holds at least one of the frames 0..n_frames-1 (pool_windows' condition).

    It fails for windows narrower than a frame (after < 0) and when the last
    timestamps lie past the last frame's window (short windows at the clip's
    end): those need window_index's nearest-frame rule.
    """
    return before >= 0 and after >= 0 and n_timestamps - 1 - before <= n_frames - 1


def _range_means(frames: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Mean of frames[lo_k:hi_k] ([T, D] -> [K, D], float64), from a float64
    cumulative sum: exact enough over hours of frames, and much faster than
    avg_pool1d on CPU. count = (hi - lo) as float64 [K, 1]."""
    csum = F.pad(torch.cumsum(frames, dim=0, dtype=torch.float64), (0, 0, 1, 0))
    return (csum.index_select(0, hi) - csum.index_select(0, lo)).div_(count)


def sliding_max(x: torch.Tensor, width: int) -> torch.Tensor:
    """max(x[j : j + width]) along dim 0 for j = 0..len(x) - width.

    Doubling (widths 1, 2, 4, ... then one overlapping step): ~log2(width)
    contiguous elementwise maxima instead of a strided reduction of width
    values per output. Exact, as max is.
    """
    covered = 1
    while covered < width:
        step = min(covered, width - covered)
        x = torch.maximum(x[:-step], x[step:])
        covered += step
    return x


def _running_sum_(x: torch.Tensor) -> None:
    """In place, x[j] += x[j - 1] for j = 1.. (a cumulative sum over dim 0).

    On CPU, row by row: torch's cumsum over a non-last dim walks a strided
    inner loop, ~5x slower here, and both add in the same sequential order,
    so the sums are equal bit for bit. Elsewhere one cumsum call (a row loop
    would launch one kernel per row).
    """
    if x.device.type != "cpu":
        x.cumsum_(dim=0)
        return
    for j in range(1, len(x)):
        x[j].add_(x[j - 1])


def pool_windows(frames: torch.Tensor, n_timestamps: int, before: int, after: int) -> torch.Tensor:
    """Mean + max of frames j in [k - before, k + after] for k = 0..n_timestamps-1.

    frames [B, T, D] -> [B, n_timestamps, D]. Windows are clipped to the clip:
    the mean is over the frames that exist, never over padding. Means come
    from a float64 running sum of the frames; it is built block by block
    (POOL_BLOCK timestamps), each block's sum starting from the previous
    block's value at its first frame, so every value equals the whole-clip
    sum's bit for bit while temporaries stay small.
    """
    B, T, D = frames.shape
    if not windows_hold_frames(n_timestamps, T, before, after):
        raise ValueError(f"a window [k - {before}, k + {after}] of {n_timestamps} timestamps misses all {T} frames")
    # Reaching past the clip changes nothing (windows are clipped), so cap the
    # reach: a window longer than the clip then costs no more than the clip.
    before, after = min(before, n_timestamps - 1), min(after, T - 1)
    width = before + after + 1
    k = torch.arange(n_timestamps, device=frames.device)
    hi, lo = (k + after + 1).clamp(max=T), (k - before).clamp(min=0)
    count = (hi - lo).to(torch.float64)[:, None]
    n_rows = min(T, POOL_BLOCK + width)  # frames one block touches, at most
    csum = frames.new_empty(n_rows + 1, D, dtype=torch.float64)  # csum[j] = sum of frames[:f0 + j]
    out = frames.new_empty(B, n_timestamps, D)
    for i in range(B):
        csum[0].zero_()
        f0 = 0
        for k0 in range(0, n_timestamps, POOL_BLOCK):
            k1 = min(n_timestamps, k0 + POOL_BLOCK)
            f1 = min(T, k1 + after)  # this block's windows touch frames [f0, f1)
            run = csum[: f1 - f0 + 1]
            run[1:].copy_(frames[i, f0:f1])
            _running_sum_(run)  # sequential per column: the same sums as over the whole clip
            mean = (run.index_select(0, hi[k0:k1] - f0) - run.index_select(0, lo[k0:k1] - f0)).div_(count[k0:k1])
            pad_l, pad_r = max(0, before - k0), max(0, k1 + after - T)
            seg = frames[i, f0:f1]
            if pad_l or pad_r:  # the clip's ends: windows are clipped there
                seg = F.pad(seg, (0, 0, pad_l, pad_r), value=float("-inf"))
            torch.add(mean, sliding_max(seg, width), out=out[i, k0:k1])  # float64 + float32 -> float32 out
            nxt = max(0, k1 - before)  # the next block's f0; its running sum starts from csum at nxt
            csum[0].copy_(run[nxt - f0])
            f0 = nxt
    return out


def window_index(
    times_ms: torch.Tensor, frame_ms: float, offset_ms: float, window_ms: float, n_frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames [lo, hi) pooled for each timestamp, for any timestamp hop.

    Frame j's centre is offset_ms + j * frame_ms; timestamp t takes the frames
    whose centres lie in [t - window/2, t + window/2), clipped to the clip, and
    at least the frame nearest to t (so a window narrower than a coarse frame
    step still gets a feature). Returns two int64 tensors shaped like times_ms.
    """
    t = times_ms.to(torch.float64)
    half = window_ms / 2
    lo = torch.ceil((t - half - offset_ms) / frame_ms).long().clamp(0, n_frames)
    hi = torch.ceil((t + half - offset_ms) / frame_ms).long().clamp(0, n_frames)
    nearest = torch.round((t - offset_ms) / frame_ms).long().clamp(0, n_frames - 1)
    empty = hi <= lo
    return torch.where(empty, nearest, lo), torch.where(empty, nearest + 1, hi)


def pool_ranges(frames: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Mean + max of frames[lo_k:hi_k] for each k: frames [B, T, D], lo/hi
    [K] -> [B, K, D]. The general form of pool_windows, for timestamps that
    are not one frame apart (coarse-stride encoders).

    Means come from a float64 cumulative sum. Windows take few distinct
    widths (a fixed window over evenly spaced frames), so maxima come from
    one sliding-window max over the frames per width, then a gather.
    """
    B, T, D = frames.shape
    lo, hi = lo.to(frames.device), hi.to(frames.device)
    width = hi - lo
    count = width.to(torch.float64)[:, None]
    out = frames.new_empty(B, len(lo), D)
    widths = width.unique().tolist()
    for i in range(B):
        mean = _range_means(frames[i], lo, hi, count)
        mx = frames.new_empty(len(lo), D)
        for w in widths:
            sel = torch.nonzero(width == w).flatten()
            run = F.pad(frames[i], (0, 0, 0, w - 1), value=float("-inf")).unfold(0, w, 1).amax(-1)  # [T, D]
            mx[sel] = run.index_select(0, lo[sel])
        torch.add(mean, mx, out=out[i])
    return out


def pool_clip(frames: torch.Tensor) -> torch.Tensor:
    """[B, T, D] -> [B, D]: temporal mean + max, as the paper's scene embedding."""
    return frames.mean(dim=1) + frames.amax(dim=1)
