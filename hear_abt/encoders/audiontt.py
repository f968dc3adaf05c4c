"""AudioNTT: BYOL-A v2's encoder, the paper's default (Table 1: 6.33 M params).

Two conv blocks (3x3 conv, BN, ReLU, 2x2 max-pool) turn a [1, 64 mel, T] log-mel
into [64 ch, 16 mel, T/4]; each of the T/4 frames (40 ms at a 10 ms hop) is
flattened to 1024 values and passed through an MLP to 2048; the frame feature
is the concatenation (1024 local + 2048 global = 3072).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, stride=2),
    ]


class AudioNTT(nn.Module):
    # Mel frames per output frame (two 2x time pools): output frame j covers
    # input frames 4j .. 4j+3.
    frame_stride = 4
    # Receptive field in mel frames of one output frame (3x3 conv, pool, 3x3
    # conv, pool): output frame j sees mel frames 4j-3 .. 4j+6.
    receptive_field = 10
    # Mel frames of context a chunk of a long clip carries on each side so
    # that chunked encoding equals one pass (a multiple of frame_stride that
    # covers the receptive field).
    chunk_context = 16

    def __init__(self, n_mels: int = 64, channels: int = 64, hidden: int = 2048, dropout: float = 0.3):
        super().__init__()
        if n_mels % 4:
            raise ValueError(f"n_mels must be a multiple of 4, got {n_mels}")
        self.features = nn.Sequential(*_conv_block(1, channels), *_conv_block(channels, channels))
        self.local_dim = channels * (n_mels // 4)
        self.fc = nn.Sequential(
            nn.Linear(self.local_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self.output_dim = self.local_dim + hidden

    def min_frames(self) -> int:
        return self.frame_stride

    def _folded(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv i's weight and bias with the BatchNorm after it folded in
        (refolded on every call, so never stale)."""
        conv, bn = self.features[i], self.features[i + 1]
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        w = conv.weight * scale[:, None, None, None]
        return w, (conv.bias - bn.running_mean) * scale + bn.bias

    def _features_eval(self, x: torch.Tensor) -> torch.Tensor:
        """The conv blocks at inference, computed the fast way on CPU; equal
        to the training graph up to float rounding (~1e-6).

        - BN is folded into the conv, and ReLU runs after the max-pool (equal,
          as ReLU is monotonic, on 4x fewer values).
        - The first conv has one input channel, for which oneDNN has no fast
          kernel: as one matmul of the 9 shifted copies of the log-mel it is
          ~4x faster, and its result comes out channels-last.
        - Everything after it stays channels-last, where CPU max-pooling is
          ~20x faster than on NCHW tensors.
        Together ~1.9x faster than folded BN on NCHW alone (2 threads, 10 s
        clip; docs/dev/speed.md has the profile).
        """
        w1, b1 = self._folded(0)
        w2, b2 = self._folded(4)
        batch, _, height, width = x.shape
        xp = F.pad(x[:, 0], (1, 1, 1, 1))
        shifted = torch.stack([xp[:, i:i + height, j:j + width] for i in range(3) for j in range(3)], dim=-1)
        y = torch.addmm(b1, shifted.reshape(-1, 9), w1.reshape(len(w1), 9).t())  # [B*H*W, C]
        y = y.view(batch, height, width, -1).permute(0, 3, 1, 2)  # [B, C, H, W], channels-last memory
        y = F.relu(F.max_pool2d(y, 2))
        y = F.conv2d(y, w2.contiguous(memory_format=torch.channels_last), b2, padding=1)
        return F.relu(F.max_pool2d(y, 2))

    def forward_frames(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, n_mels, T] -> [B, T // 4, 3072] frame features."""
        x = self.features(x) if self.training else self._features_eval(x)  # [B, C, n_mels/4, T/4]
        x = x.permute(0, 3, 1, 2).flatten(2)  # [B, T/4, C * n_mels/4]
        return torch.cat([x, self.fc(x)], dim=-1)  # [B, T/4, 3072]

    def readouts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frame features after each stage, [B, T_stage, D_stage], through the
        training graph (eval/layer_probe.py asks where learned information
        sits). "conv2" then "fc2", concatenated, are forward_frames' output."""
        h1 = self.features[:4](x)  # [B, C, n_mels/2, T/2]
        conv2 = self.features[4:](h1).permute(0, 3, 1, 2).flatten(2)  # [B, T/4, C * n_mels/4]
        fc1 = self.fc[:3](conv2)  # first Linear, ReLU, Dropout
        return {"conv1": h1.permute(0, 3, 1, 2).flatten(2), "conv2": conv2, "fc1": fc1, "fc2": self.fc[3:](fc1)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, n_mels, T] -> [B, 3072]: temporal mean + max, as BYOL-A v2."""
        f = self.forward_frames(x)
        return f.mean(dim=1) + f.amax(dim=1)
