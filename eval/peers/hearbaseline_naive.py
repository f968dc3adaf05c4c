"""hearbaseline's naive log-mel random-projection module, runnable on librosa >= 0.10.

Why: hearbaseline 2021.1.1 calls ``librosa.filters.mel(sample_rate, ...)`` with
the sample rate positional; librosa 0.10 made every argument keyword-only, so
``load_model()`` raises ``TypeError``. Pinning librosa 0.9 would pull numpy < 2.
Instead this module gives ``hearbaseline.naive`` (and only it) a librosa
stand-in whose ``filters.mel`` forwards the rate as ``sr=``; the model and its
numbers are hearbaseline's own. Run it as ``--module hearbaseline_naive`` with
``eval/peers`` on PYTHONPATH (eval/run.py sets that). It needs the tasks'
44100 Hz audio, as in HEAR 2021.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import librosa
import hearbaseline.naive as _naive


def _mel(sr: float, **kwargs: Any):
    return librosa.filters.mel(sr=sr, **kwargs)


_naive.librosa = SimpleNamespace(filters=SimpleNamespace(mel=_mel))

load_model = _naive.load_model
get_scene_embeddings = _naive.get_scene_embeddings
get_timestamp_embeddings = _naive.get_timestamp_embeddings
