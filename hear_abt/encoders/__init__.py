"""Encoder registry: name -> class. Checkpoints store the name and kwargs."""
from __future__ import annotations

from typing import Any

from torch import nn

from .audiontt import AudioNTT

ENCODERS: dict[str, type[nn.Module]] = {
    "audiontt": AudioNTT,
}


def build_encoder(name: str, **kwargs: Any) -> nn.Module:
    """Every encoder has forward_frames([B,1,M,T]) -> [B,T',D], forward -> [B,D],
    and the attributes output_dim, frame_stride (mel frames per output frame),
    receptive_field and chunk_context (mel frames)."""
    try:
        cls = ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}") from None
    return cls(**kwargs)
