"""Reading audio files for the CLI and the trainer: decode, down-mix, resample.

The HEAR API never resamples (its caller must pass 16 kHz); file-based entry
points do, and say so. soundfile is imported here, where it is used, so the
package imports without it (the GPU machine has no soundfile).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


class AudioReadError(ValueError):
    """A file that cannot be used as audio (missing, unreadable, empty)."""


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int


def read_audio(path: str | Path, target_sr: int = 16000) -> tuple[torch.Tensor, AudioInfo]:
    """Decode a file to mono float32 at target_sr: returns ([samples], original info).

    Down-mixing (channel mean) and resampling are logged at INFO level.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioReadError(f"{path}: no such audio file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioReadError(f"{path}: cannot decode audio ({e})") from None
    info = AudioInfo(str(path), int(sr), int(data.shape[1]), int(data.shape[0]))
    if data.shape[0] == 0:
        raise AudioReadError(f"{path}: the file holds no samples")
    if not np.isfinite(data).all():
        raise AudioReadError(f"{path}: the file holds NaN or Inf samples")
    wav = torch.from_numpy(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0].copy())
    if data.shape[1] > 1:
        log.info("%s: down-mixed %d channels to mono", path, data.shape[1])
    if sr != target_sr:
        import torchaudio.functional as AF

        log.info("%s: resampled %d Hz -> %d Hz", path, sr, target_sr)
        wav = AF.resample(wav, sr, target_sr)
    return wav.contiguous(), info
