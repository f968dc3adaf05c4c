"""Frame features in one pass per clip, and the route of a clip to its embeddings.

The original ABT wrapper framed raw audio into 950 ms windows every 50 ms and
ran frontend + encoder on each (19x overlapping work). Here the frontend and
encoder run once over the whole clip, in chunks so that memory stays bounded,
and the encoder's 40 ms frame features are pooled per window. Chunks carry
enough context that the result equals a single full pass: mel frame i needs
samples i*hop +- n_fft/2, and each encoder states the mel-frame context its
output frames need (`chunk_context`; AudioNTT: 3 frames before and 6 after).

This module owns the whole route of a clip (timestamp_embeddings,
scene_embeddings); hear_api.py only checks the HEAR contract and calls one
of them. Long clips cost the same per second as short ones: the encoder runs
in fixed-size chunks, and pooling.py pools in blocks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .frontend import LogMel
from .pooling import (  # noqa: F401 - also offered here, where they used to live
    POOL_BLOCK,
    pool_clip,
    pool_ranges,
    pool_windows,
    sliding_max,
    window_bounds,
    window_index,
    windows_hold_frames,
)

if TYPE_CHECKING:
    from .model import ABTModel


def logmel_range(frontend: LogMel, wav: torch.Tensor, m0: int, m1: int) -> torch.Tensor:
    """Log-mel frames [m0, m1) of [B, samples] audio, identical to slicing the
    log-mel of the whole clip (centred STFT, zero padding outside the clip)."""
    cfg = frontend.cfg
    half = cfg.n_fft // 2
    start = m0 * cfg.hop_length - half
    stop = (m1 - 1) * cfg.hop_length + cfg.n_fft - half
    n = wav.shape[-1]
    left, right = max(0, -start), max(0, stop - n)
    seg = wav[:, max(0, start) : min(n, stop)]
    if left or right:
        seg = F.pad(seg, (left, right))
    return frontend(seg, center=False)


def frame_features(
    frontend: LogMel,
    encoder: torch.nn.Module,
    norm_mean: float,
    norm_std: float,
    wav: torch.Tensor,
    chunk_frames: int,
) -> torch.Tensor:
    """[B, samples] -> encoder frame features [B, T', D], T' = n_mel_frames // stride.

    Works on chunks of `chunk_frames` output frames (plus context), so peak
    memory depends on the chunk length, not the clip length. Chunks start on
    multiples of `encoder.chunk_align` mel frames when the encoder has one
    (ViT-C: its 96-frame segment grid), else of its frame stride.
    """
    stride = encoder.frame_stride
    align = getattr(encoder, "chunk_align", stride) // stride  # in output frames
    chunk_frames = -(-max(1, chunk_frames) // align) * align
    n_mel = frontend.cfg.n_frames(wav.shape[-1])
    n_out = n_mel // stride
    if n_out < 1:
        raise ValueError(f"clip too short: {n_mel} mel frames, the encoder needs {stride}")
    ctx = encoder.chunk_context
    out: torch.Tensor | None = None  # filled in place: no second copy of a long clip's frames
    for a in range(0, n_out, chunk_frames):
        b = min(n_out, a + chunk_frames)
        m0 = max(0, a * stride - ctx)
        m1 = n_mel if b == n_out else min(n_mel, b * stride + ctx)
        mel = logmel_range(frontend, wav, m0, m1)  # [B, M, t]
        x = ((mel - norm_mean) / norm_std).unsqueeze(1)  # [B, 1, M, t]
        feats = encoder.forward_frames(x)  # [B, t // stride, D]
        first = a - m0 // stride
        if out is None:
            out = feats.new_empty(feats.shape[0], n_out, feats.shape[2])
        out[:, a:b] = feats[:, first : first + (b - a)]
    assert out is not None
    return out


# --- the whole route of a clip: hear_api calls one of the two functions below


def min_samples(model: ABTModel) -> int:
    """Shortest clip that yields one encoder frame; shorter ones are zero-padded."""
    return (model.encoder.frame_stride - 1) * model.mel_config.hop_length


def padded_to_one_frame(model: ABTModel, audio: torch.Tensor) -> torch.Tensor:
    """[n, samples], with silence appended to clips shorter than one encoder
    frame (their own samples are all kept)."""
    short = min_samples(model) - audio.shape[1]
    return F.pad(audio, (0, short)) if short > 0 else audio


def clip_frames(model: ABTModel, audio: torch.Tensor) -> torch.Tensor:
    """[n, samples] -> [n, T', D]; clips shorter than one encoder frame get
    silence appended (padded_to_one_frame)."""
    audio = padded_to_one_frame(model, audio)
    return frame_features(model.frontend, model.encoder, model.norm_mean, model.norm_std, audio, model.chunk_frames)


def timestamps_ms(model: ABTModel, n_samples: int, device: torch.device) -> torch.Tensor:
    """Window centres in ms: 0, hop_ms, 2 hop_ms, ... up to the clip's end
    (hop_ms: the encoder's frame step, or 40 ms when that exceeds 50 ms)."""
    duration_ms = 1000.0 * n_samples / model.sample_rate
    k = int(duration_ms // model.hop_ms) + 1
    return torch.arange(k, device=device, dtype=torch.float64).mul(model.hop_ms).float()


def _pool_timestamps(model: ABTModel, frames: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """Fast path: one timestamp per frame and fixed windows that each hold a
    frame. Otherwise (coarse frames, or windows that hold no frame: narrower
    than a frame, or past the clip's last frame) each window takes its frames
    or at least the nearest one (window_index)."""
    before, after = model.window_before, model.window_after
    if model.hop_ms == model.frame_ms and windows_hold_frames(len(ts), frames.shape[1], before, after):
        return pool_windows(frames, len(ts), before, after)
    lo, hi = window_index(ts, model.frame_ms, model.frame_offset_ms, model.options.timestamp_window_ms, frames.shape[1])
    return pool_ranges(frames, lo, hi)


def timestamp_embeddings(model: ABTModel, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked float32 audio [n, samples] -> ([n, K, D], timestamps [n, K] ms).
    The caller sets eval mode and no_grad (hear_api does)."""
    ts = timestamps_ms(model, audio.shape[1], audio.device)
    n, d = audio.shape[0], model.timestamp_embedding_size
    if n == 0:
        return audio.new_zeros(0, len(ts), d), audio.new_zeros(0, len(ts))
    emb = _pool_timestamps(model, clip_frames(model, audio), ts)
    return emb, ts.expand(n, -1).contiguous()


def pooled(model: ABTModel, frames: torch.Tensor, n_samples: int, timestamps: bool = False
           ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One clip_frames pass -> (scene [n, D], timestamp embeddings [n, K, D],
    centres [K] ms). The timestamp pair is None unless asked for or needed by
    the scene: mean + max of the frame features over the clip ("clip"), or
    the mean of the timestamp embeddings ("timestamps")."""
    by_timestamps = model.options.scene_pooling == "timestamps"
    emb = ts = None
    if timestamps or by_timestamps:
        ts = timestamps_ms(model, n_samples, frames.device)
        emb = _pool_timestamps(model, frames, ts)
    return (emb.mean(dim=1) if by_timestamps else pool_clip(frames)), emb, ts


def scene_embeddings(model: ABTModel, audio: torch.Tensor) -> torch.Tensor:
    """Checked float32 audio [n, samples] -> [n, D] (see pooled)."""
    if audio.shape[0] == 0:
        if model.options.scene_pooling == "timestamps":
            return timestamp_embeddings(model, audio)[0].mean(dim=1)
        return audio.new_zeros(0, model.scene_embedding_size)
    return pooled(model, clip_frames(model, audio), audio.shape[1])[0]
