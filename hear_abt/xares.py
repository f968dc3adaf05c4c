"""X-ARES adapter: the ABT encoder as the `nn.Module` that X-ARES evaluates.

X-ARES (`pip install xares`) loads a class whose name ends in "Encoder" and
that has `sampling_rate`, `output_dim` and `hop_size_in_ms`; `forward` maps a
[B, samples] waveform to [B, T, D] frames. Here the frames are the encoder's
frame features (AudioNTT: 3072-d every 40 ms), computed as the HEAR API
computes them before pooling. X-ARES instantiates the class with no
arguments, which gives the bundled checkpoint; pass a path for another.

    python -m xares.run hear_abt/xares.py tasks/esc50_task.py   # X-ARES installed in full

This module defines no other name ending in "Encoder": X-ARES picks the
class by that suffix and refuses a module with two.
"""
from __future__ import annotations

import torch
from torch import nn

from . import embed
from .hear_api import load_model


class ABTEncoder(nn.Module):
    """Frozen ABT frame features for X-ARES: [B, samples] at 16 kHz -> [B, T, D]."""

    def __init__(self, checkpoint: str = "", **options):
        super().__init__()
        self.model = load_model(checkpoint, **options)
        self.sampling_rate = self.model.sample_rate
        self.output_dim = int(self.model.timestamp_embedding_size)
        self.hop_size_in_ms = float(self.model.frame_ms)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.ndim == 1:
            audio = audio.unsqueeze(0)
        audio = audio.to(self.model.device, torch.float32)
        self.model.eval()  # the encoder is frozen: batch statistics and dropout never apply
        with torch.no_grad():
            return embed.clip_frames(self.model, audio)
