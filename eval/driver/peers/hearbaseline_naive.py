"""hearbaseline's naive log-mel random-projection module, runnable on librosa >= 0.10.

Why: hearbaseline 2021.1.1 calls ``librosa.filters.mel(sample_rate, ...)`` with
the sample rate positional; librosa 0.10 made every argument keyword-only, so
``load_model()`` raises ``TypeError``. Pinning librosa 0.9 would pull numpy < 2.
Instead this module gives ``hearbaseline.naive`` (and only it) a librosa
stand-in whose ``filters.mel`` forwards the rate as ``sr=``; the model and its
numbers are hearbaseline's own. Run it as ``--module hearbaseline_naive`` with
``eval/driver/peers`` on PYTHONPATH (eval/driver/run.py sets that).

The naive model works at 44.1 kHz. HEAR tasks ship 44100 Hz copies; the
mini-HEAR suite writes only 16 kHz (its sources hold nothing above 8 kHz),
so ``load_model(input_rate=16000)`` (``--model-options '{"input_rate": 16000}'``)
returns a wrapper that takes 16 kHz audio and upsamples it to 44.1 kHz
before hearbaseline's own code runs. Timestamps are in ms, so they do not
change.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import hearbaseline.naive as _naive
import librosa
import torch
import torchaudio


def _mel(sr: float, **kwargs: Any):
    return librosa.filters.mel(sr=sr, **kwargs)


_naive.librosa = SimpleNamespace(filters=SimpleNamespace(mel=_mel))



class _Resampled(torch.nn.Module):
    """The naive model behind an input-rate converter."""

    def __init__(self, inner: torch.nn.Module, input_rate: int):
        super().__init__()
        self.inner = inner
        self.sample_rate = int(input_rate)
        self.scene_embedding_size = inner.scene_embedding_size
        self.timestamp_embedding_size = inner.timestamp_embedding_size

    def upsample(self, audio: torch.Tensor) -> torch.Tensor:
        return torchaudio.functional.resample(audio, self.sample_rate, self.inner.sample_rate)


def load_model(model_file_path: str = "", input_rate: int = 44100) -> torch.nn.Module:
    model = _naive.load_model(model_file_path)
    return model if int(input_rate) == model.sample_rate else _Resampled(model, input_rate)


def get_timestamp_embeddings(audio: torch.Tensor, model: torch.nn.Module):
    if isinstance(model, _Resampled):
        return _naive.get_timestamp_embeddings(model.upsample(audio), model.inner)
    return _naive.get_timestamp_embeddings(audio, model)


def get_scene_embeddings(audio: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    if isinstance(model, _Resampled):
        return _naive.get_scene_embeddings(model.upsample(audio), model.inner)
    return _naive.get_scene_embeddings(audio, model)
