"""Encoder registry: name -> class. Checkpoints store the name and kwargs."""
from __future__ import annotations

from typing import Any

from torch import nn

from .audiontt import AudioNTT
from .resnet import ResNet18, ResNet18ReGPNRF
from .vit import ViTCBase, ViTCSmall, ViTCTiny

ENCODERS: dict[str, type[nn.Module]] = {
    "audiontt": AudioNTT,
    "resnet18": ResNet18,
    "resnet18_regp_nrf": ResNet18ReGPNRF,
    "vitc_tiny": ViTCTiny,
    "vitc_small": ViTCSmall,
    "vitc_base": ViTCBase,
}


def build_encoder(name: str, **kwargs: Any) -> nn.Module:
    """Every encoder has forward_frames([B,1,M,T]) -> [B,T',D], forward -> [B,D],
    and the attributes output_dim, frame_stride (mel frames per output frame),
    receptive_field and chunk_context (mel frames); optionally chunk_align
    (mel frames chunks must start on; default frame_stride)."""
    try:
        cls = ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}") from None
    return cls(**kwargs)
