"""The module that load_model returns: frontend + fixed normalisation + encoder."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from .encoders import build_encoder
from .fields import reject_unknown
from .frontend import LogMel, MelConfig
from .pooling import window_bounds

# HEAR requires timestamps at most 50 ms apart. Encoders with coarser frames
# (ResNets: 160-320 ms, ViT-C: 80 ms) get timestamps every 40 ms, each pooling
# the frames whose centres lie in its window.
MAX_HOP_MS = 50.0
COARSE_HOP_MS = 40.0


@dataclass(frozen=True)
class EmbeddingOptions:
    """load_model(**options): the documented knobs (heareval's --model-options).

    scene_pooling: "clip" (default, as the paper's wrapper): mean + max of the
        encoder's frame features over the whole clip; "timestamps": the mean of
        the timestamp embeddings (as hearbaseline's naive module).
    timestamp_window_ms: width of the window pooled around each timestamp
        (default 960, the ~0.96 s the encoder was trained on).
    chunk_seconds: length of the pieces a long clip is encoded in; bounds peak
        memory, does not change the result.
    """

    scene_pooling: str = "clip"
    timestamp_window_ms: float = 960.0
    chunk_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.scene_pooling not in ("clip", "timestamps"):
            raise ValueError(f"scene_pooling must be 'clip' or 'timestamps', got {self.scene_pooling!r}")
        if not (0 < float(self.timestamp_window_ms) < math.inf):
            raise ValueError(f"timestamp_window_ms must be a finite number > 0, got {self.timestamp_window_ms!r}")
        if not (float(self.chunk_seconds) >= 1):
            raise ValueError(f"chunk_seconds must be >= 1, got {self.chunk_seconds!r}")

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> EmbeddingOptions:
        reject_unknown(cls, kwargs, "load_model option(s)", TypeError)
        return cls(**kwargs)


class ABTModel(nn.Module):
    # HEAR API attributes (the sizes are set per encoder in __init__).
    sample_rate: int = 16000
    scene_embedding_size: int
    timestamp_embedding_size: int

    def __init__(
        self,
        encoder_name: str,
        encoder_kwargs: Mapping[str, Any],
        mel: MelConfig,
        norm_stats: tuple[float, float],
        options: EmbeddingOptions = EmbeddingOptions(),
    ):
        super().__init__()
        if mel.sample_rate != self.sample_rate:
            raise ValueError(f"checkpoint mel sample_rate {mel.sample_rate} != {self.sample_rate}")
        self.encoder_name = encoder_name
        self.encoder_kwargs = dict(encoder_kwargs)
        self.mel_config = mel
        self.frontend = LogMel(mel)
        self.encoder = build_encoder(encoder_name, **encoder_kwargs)
        self.norm_mean, self.norm_std = float(norm_stats[0]), float(norm_stats[1])
        self.options = options
        d = int(self.encoder.output_dim)
        self.scene_embedding_size = d
        self.timestamp_embedding_size = d
        # One output frame spans `frame_stride` mel frames; its centre is
        # (stride - 1) / 2 hops after the centre of the first.
        self.frame_ms = self.encoder.frame_stride * mel.hop_ms
        self.frame_offset_ms = (self.encoder.frame_stride - 1) / 2 * mel.hop_ms
        # Timestamp hop: the frame step when it is fine enough (one timestamp per
        # frame, fixed-width windows: the fast path), else 40 ms.
        self.hop_ms = self.frame_ms if self.frame_ms <= MAX_HOP_MS else COARSE_HOP_MS
        self.window_before, self.window_after = window_bounds(
            self.frame_ms, self.frame_offset_ms, options.timestamp_window_ms
        )
        self.chunk_frames = max(1, round(options.chunk_seconds * 1000 / self.frame_ms))
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def extra_repr(self) -> str:
        return (
            f"encoder={self.encoder_name}, norm=({self.norm_mean:.3f}, {self.norm_std:.3f}), "
            f"frame={self.frame_ms:g} ms, hop={self.hop_ms:g} ms, options={self.options}"
        )
