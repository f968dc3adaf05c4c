"""The log-mel frontend: the single source of the mel facts.

The paper (and BYOL-A, whose frontend it reuses) computes log(mel + eps) from
16 kHz audio with a 1024-sample window, a 160-sample hop and 64 mel bins over
60-7800 Hz. The original ABT HEAR wrapper used a 400-sample window at inference
against 1024 in training; we store the MelConfig in every checkpoint so the two
can never differ.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from .fields import reject_unknown


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 60.0
    f_max: float = 7800.0
    # torch.finfo(torch.float32).eps, as BYOL-A/ABT add before the log.
    eps: float = 1.1920928955078125e-07

    @property
    def hop_ms(self) -> float:
        return 1000.0 * self.hop_length / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MelConfig:
        reject_unknown(cls, d, "MelConfig keys")
        return cls(**d)

    def n_frames(self, n_samples: int) -> int:
        """Frames a centred STFT gives for n_samples (frame i is centred at i * hop)."""
        return 1 + n_samples // self.hop_length


class LogMel(nn.Module):
    """Waveform [batch, samples] -> log-mel [batch, n_mels, frames] (float32).

    Centred STFT with zero padding, so frame i is centred on sample i * hop and
    any length >= 1 sample works (reflect padding would fail on tiny clips).
    The padding is explicit so that embed.py can compute any range of frames
    of a long clip exactly, from a slice of it.
    """

    def __init__(self, cfg: MelConfig = MelConfig()):
        super().__init__()
        import torchaudio  # local: keeps `import hear_abt` light

        self.cfg = cfg
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=cfg.n_fft,
            win_length=cfg.win_length,
            hop_length=cfg.hop_length,
            f_min=cfg.f_min,
            f_max=cfg.f_max,
            n_mels=cfg.n_mels,
            power=2.0,
            center=False,
        )

    def forward(self, wav: torch.Tensor, center: bool = True) -> torch.Tensor:
        """center=False: `wav` already holds n_fft/2 samples of context each side."""
        if center:
            half = self.cfg.n_fft // 2
            wav = torch.nn.functional.pad(wav, (half, half))
        return torch.log(self.mel(wav.float()) + self.cfg.eps)


def clip_sums(m: torch.Tensor) -> tuple[int, float, float]:
    """(n, sum, sum of squares) of one log-mel in float64: what the
    normalisation statistics add up, clip by clip (also in cache workers)."""
    m = m.double()
    return m.numel(), float(m.sum()), float((m * m).sum())


def norm_stats_from_sums(sums: Iterable[Sequence[float]]) -> tuple[float, float]:
    """Mean and std from per-clip (n, sum, sum of squares), added in order."""
    n, s, ss = 0, 0.0, 0.0
    for cn, cs, css in sums:
        n += int(cn)
        s += float(cs)
        ss += float(css)
    if n == 0:
        raise ValueError("no log-mel values to measure normalisation statistics on")
    mean = s / n
    std = max(ss / n - mean * mean, 0.0) ** 0.5
    if not std > 0:
        raise ValueError("log-mel values have zero variance (silent audio?); cannot normalise")
    return mean, std


def measure_norm_stats(mels: Iterable[torch.Tensor]) -> tuple[float, float]:
    """Scalar mean and std over every value of some log-mels (float64 sums),
    the fixed normalisation BYOL-A and ABT apply before the encoder."""
    return norm_stats_from_sums(clip_sums(m) for m in mels)
