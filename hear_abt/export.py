"""Export a checkpoint to ONNX or TorchScript: waveform in, frame features and scene embedding out.

Inside the graph: zero-padded centred STFT (as a convolution with a windowed
DFT basis, which every runtime has), power, the checkpoint's mel filterbank,
log(mel + eps), the checkpoint's fixed normalisation, the encoder's frame
features, and the scene pooling (mean + max over time). Batch and length are
dynamic. Outside it (left to the caller, as the HEAR API's checks are):
down-mixing, resampling to 16 kHz, the [-1, 1] range check, padding of clips
shorter than one encoder frame, and the HEAR timestamp pooling (which needs
per-clip window bounds; `hear_abt.embed` holds it).

The whole clip goes through in one pass, which equals the chunked PyTorch
path up to float rounding (chunks carry their context; see embed.py).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .model import ABTModel

FORMATS = ("onnx", "torchscript")
INPUT_NAME = "waveform"
OUTPUT_NAMES = ("frames", "scene")
ONNX_OPSET = 17


class WaveformEncoder(nn.Module):
    """waveform [B, samples] float32 16 kHz -> (frames [B, T, D], scene [B, D]).

    T = (samples // hop + 1) // frame_stride; needs samples >= (frame_stride - 1) * hop.
    """

    def __init__(self, model: ABTModel):
        super().__init__()
        cfg = model.mel_config
        self.n_fft, self.hop, self.eps = cfg.n_fft, cfg.hop_length, cfg.eps
        self.norm_mean, self.norm_std = model.norm_mean, model.norm_std
        mel = model.frontend.mel
        window = mel.spectrogram.window.to(torch.float64)  # [win_length], centred in n_fft as torch.stft does
        left = (cfg.n_fft - len(window)) // 2
        window = F.pad(window, (left, cfg.n_fft - len(window) - left))
        n_freq = cfg.n_fft // 2 + 1
        t = torch.arange(cfg.n_fft, dtype=torch.float64)
        k = torch.arange(n_freq, dtype=torch.float64)[:, None]
        angle = 2 * math.pi * k * t / cfg.n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window  # [2 * n_freq, n_fft]
        self.register_buffer("dft", basis.float()[:, None, :])  # conv1d weight
        self.register_buffer("fb", mel.mel_scale.fb.float().t().contiguous())  # [n_mels, n_freq]
        self.encoder = model.encoder
        self.eval()

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.n_fft // 2
        x = F.pad(waveform[:, None, :], (half, half))  # centred frames, zeros outside the clip
        spec = F.conv1d(x, self.dft, stride=self.hop)  # [B, 2 * n_freq, frames]
        re, im = spec.chunk(2, dim=1)
        power = re * re + im * im
        mel = torch.log(torch.matmul(self.fb, power) + self.eps)  # [B, n_mels, frames]
        x = ((mel - self.norm_mean) / self.norm_std).unsqueeze(1)
        frames = self.encoder.forward_frames(x)
        return frames, frames.mean(dim=1) + frames.amax(dim=1)


def export_model(model: ABTModel, path: str | Path, fmt: str, example_seconds: float = 2.0) -> Path:
    """Write model as fmt ("onnx" or "torchscript") to path, atomically; returns path."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    module = WaveformEncoder(model.cpu().eval()).eval()
    example = 0.1 * torch.randn(2, int(example_seconds * model.sample_rate), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if fmt == "torchscript":
            traced = torch.jit.trace(module, example, check_trace=False)
            torch.jit.save(traced, str(tmp))
        else:
            torch.onnx.export(
                module, (example,), str(tmp), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                dynamic_axes={INPUT_NAME: {0: "batch", 1: "samples"}, "frames": {0: "batch", 1: "time"},
                              "scene": {0: "batch"}},
                opset_version=ONNX_OPSET, dynamo=False,
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(path)
    return path
