"""ResNet-18 for 1-channel log-mel, and its ReGP-NRF variant (paper Table 1).

Both use ResNet-18's four stages of two basic blocks (64-128-256-512 channels)
behind a "ResNet-C" stem of three 3x3 convs (1 -> 32 -> 32 -> 64 channels), as
the authors' code does. They differ only in their strides:

- ``resnet18``: the usual image strides (stem 2, max-pool 2, stages 1-2-2-2):
  time and mel shrink 32x, so a 64 x 96 crop becomes 2 x 3; frame features are
  the 512 channels averaged over the 2 mel rows. 512-d.
- ``resnet18_regp_nrf`` (BYOL-A's "regional global pooling + narrow receptive
  field", Niizumi et al. 2022): stem stride 1 and the last stage strides time
  only, so time shrinks 16x and mel 8x (64 -> 8 rows); each frame keeps its
  frequency layout by flattening 8 rows x 512 channels = 4096-d, and the
  receptive field is about half that of ``resnet18``.

Both are local CNNs, so a long clip encodes in chunks that carry
``chunk_context`` mel frames each side and the result equals one pass.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def _conv_bn(c_in: int, c_out: int, stride: int | tuple[int, int] = 1, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False), nn.BatchNorm2d(c_out)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN pairs with an identity (or 1x1 conv-BN) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int | tuple[int, int] = 1):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(c_in, c_out, stride), *_conv_bn(c_out, c_out, relu=False))
        self.shortcut: nn.Module = nn.Identity()
        if stride not in (1, (1, 1)) or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class _ResNet18(nn.Module):
    """Shared body; subclasses set the strides and how a time column becomes a frame.

    Strides are (mel, time) pairs for: stem, max-pool, stage 1..4.
    """

    strides: Sequence[tuple[int, int]]
    frame_stride: int
    receptive_field: int
    chunk_context: int

    def __init__(self, n_mels: int = 64, widths: Sequence[int] = (64, 128, 256, 512)):
        super().__init__()
        s = self.strides
        mel_stride = 1
        for m, _ in s:
            mel_stride *= m
        if n_mels % mel_stride:
            raise ValueError(f"n_mels must be a multiple of {mel_stride}, got {n_mels}")
        self.mel_rows = n_mels // mel_stride
        self.stem = nn.Sequential(*_conv_bn(1, widths[0] // 2, s[0]), *_conv_bn(widths[0] // 2, widths[0] // 2),
                                  *_conv_bn(widths[0] // 2, widths[0]))
        self.pool = nn.MaxPool2d(3, s[1], padding=1)
        stages, c = [], widths[0]
        for w, stride in zip(widths, s[2:]):
            stages.append(nn.Sequential(BasicBlock(c, w, stride), BasicBlock(w, w)))
            c = w
        self.stages = nn.Sequential(*stages)
        self.channels = c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def min_frames(self) -> int:
        return self.frame_stride

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, n_mels, T] -> [B, C, mel_rows, ceil(T / frame_stride)]."""
        return self.stages(self.pool(self.stem(x)))

    def forward_frames(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, n_mels, T] -> [B, output_dim]: temporal mean + max of the frames."""
        f = self.forward_frames(x)
        return f.mean(dim=1) + f.amax(dim=1)


class ResNet18(_ResNet18):
    """ResNet-18 on log-mel, 512-d frames every 320 ms.

    frame_stride 32: output frame j summarises mel frames 32j .. 32j+31.
    receptive_field 439 mel frames (4.39 s), from the conv/pool chain
    (stem 3x3/2, 3x3, 3x3; pool 3/2; 16 3x3 convs, three of them stride 2):
    219 frames before the frame's own 32 and 188 after.
    chunk_context 224: the larger side rounded up to a multiple of 32.
    Frame feature: mean over the 2 remaining mel rows (the paper's global
    average pool is the time-mean of these frames).
    """

    strides = ((2, 2), (2, 2), (1, 1), (2, 2), (2, 2), (2, 2))
    frame_stride = 32
    receptive_field = 439
    chunk_context = 224

    def __init__(self, n_mels: int = 64):
        super().__init__(n_mels)
        self.output_dim = self.channels

    def forward_frames(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, n_mels, T] -> [B, ceil(T / 32), 512] (the last frame may be partial)."""
        return self.feature_map(x).mean(dim=2).transpose(1, 2)


class ResNet18ReGPNRF(_ResNet18):
    """ResNet-18 with regional global pooling and a narrow receptive field:
    4096-d frames (8 mel rows x 512 channels) every 160 ms.

    frame_stride 16: output frame j summarises mel frames 16j .. 16j+15.
    receptive_field 221 mel frames (2.21 s): stem stride 1 and a time-only
    stride in the last stage halve ResNet-18's 439; 110 frames before the
    frame's own 16 and 95 after.
    chunk_context 112: the larger side rounded up to a multiple of 16.
    """

    strides = ((1, 1), (2, 2), (1, 1), (2, 2), (2, 2), (1, 2))
    frame_stride = 16
    receptive_field = 221
    chunk_context = 112

    def __init__(self, n_mels: int = 64):
        super().__init__(n_mels)
        self.output_dim = self.channels * self.mel_rows

    def forward_frames(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, n_mels, T] -> [B, ceil(T / 16), 4096]; features ordered (mel row, channel)."""
        f = self.feature_map(x)  # [B, C, rows, T']
        return f.permute(0, 3, 2, 1).flatten(2)  # [B, T', rows * C]
