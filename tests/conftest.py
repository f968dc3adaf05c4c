"""Shared fixtures: a tiny corpus of real audio and its log-mel cache.

The corpus is the bundled example clip plus the freedesktop sound theme
(Debian's sound-theme-freedesktop: recorded bells, clicks, voices at 8-96
kHz, mono and stereo), with a corrupt, an empty and a silent file that the
trainer must skip and report.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_WAV = REPO / "hear_abt" / "examples" / "speech_and_bell.wav"
FREEDESKTOP = Path("/usr/share/sounds/freedesktop/stereo")
BAD_FILES = ("corrupt.wav", "empty.wav", "silent.wav")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~30 s on 2 CPU cores")


@pytest.fixture(scope="session")
def audio_corpus(tmp_path_factory) -> Path:
    """Folder: example clip, sub/*.oga (nested, so listing must recurse), and
    corrupt.wav (random bytes), empty.wav (0 bytes), silent.wav (zeros)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("corpus")
    shutil.copy(EXAMPLE_WAV, root / EXAMPLE_WAV.name)
    oga = sorted(FREEDESKTOP.glob("*.oga"))
    if len(oga) < 10:
        pytest.skip("needs the freedesktop sound theme (apt-get install sound-theme-freedesktop)")
    (root / "sub").mkdir()
    for f in oga:
        shutil.copy(f, root / "sub" / f.name)
    (root / "corrupt.wav").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    return root


@pytest.fixture(scope="session")
def mel_cache_root(audio_corpus, tmp_path_factory) -> Path:
    """A cache root holding the built log-mel cache of audio_corpus."""
    from hear_abt.frontend import MelConfig
    from hear_abt.train.data import list_audio, open_or_build_cache

    root = tmp_path_factory.mktemp("melcache")
    open_or_build_cache(list_audio(audio_corpus), MelConfig(), root, workers=0)
    return root


@pytest.fixture
def tiny_config(audio_corpus, mel_cache_root, tmp_path):
    """A TrainConfig small enough for a CPU test: batch 4, 16-frame crops, a
    32-16 projector, a memory bank of 8 (fills and wraps in a few steps)."""
    from hear_abt.train.config import TrainConfig

    def make(**overrides):
        base = dict(
            data=str(audio_corpus), run_dir=str(tmp_path / "run"), cache_dir=str(mel_cache_root), workers=0,
            batch_size=4, crop_frames=16, projector=[32, 16], steps=4, mixup_bank=8,
            log_every=1, plot_every=0, ckpt_every=2, device="cpu",
        )
        base.update(overrides)
        return TrainConfig(**base)

    return make
