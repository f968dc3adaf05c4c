"""Shared fixtures: small real audio, a random-weights checkpoint, the
`--small` mini-HEAR suite, and a tiny training corpus with its log-mel cache.

The training corpus is the bundled example clip plus the freedesktop sound
theme (Debian's sound-theme-freedesktop: recorded bells, clicks, voices at
8-96 kHz, mono and stereo), with a corrupt, an empty and a silent file that
the trainer must skip and report.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import EXAMPLE

FREEDESKTOP = Path("/usr/share/sounds/freedesktop/stereo")
BAD_FILES = ("corrupt.wav", "empty.wav", "silent.wav")


@pytest.fixture(scope="session")
def example_wav() -> torch.Tensor:
    """The bundled 3.7 s real clip (bell + speech), mono 16 kHz."""
    from hear_abt.audio_io import read_audio

    wav, info = read_audio(EXAMPLE)
    assert info.sample_rate == 16000
    return wav


@pytest.fixture(scope="session")
def rand_ckpt(tmp_path_factory) -> Path:
    """A random-weights AudioNTT checkpoint written by `hear-abt init`."""
    from hear_abt.cli import main

    path = tmp_path_factory.mktemp("ckpt") / "random.pt"
    main(["init", "-o", str(path), "--seed", "0"])
    return path


@pytest.fixture(scope="session")
def model(rand_ckpt):
    import hear_abt

    return hear_abt.load_model(str(rand_ckpt))


@pytest.fixture(scope="session")
def minihear_small(tmp_path_factory) -> Path:
    """The --small mini-HEAR suite (seed 0, no cards), built once per session.

    Returns the tasks folder (one <task>-v1.0-full sub-folder per task), ready
    for heareval's runners. The Debian audio sources come from install.sh.
    """
    missing = [t for t in ("espeak-ng", "fluidsynth", "sox") if shutil.which(t) is None]
    assert not missing, f"{missing} missing: run `bash install.sh` (scripts/install_apt.sh)"
    from eval.minihear.build import build_tasks

    out = tmp_path_factory.mktemp("minihear") / "tasks"
    build_tasks(out, seed=0, small=True)
    return out


@pytest.fixture(scope="session")
def audio_corpus(tmp_path_factory) -> Path:
    """Folder: example clip, sub/*.oga (nested, so listing must recurse), and
    corrupt.wav (random bytes), empty.wav (0 bytes), silent.wav (zeros)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("corpus")
    shutil.copy(EXAMPLE, root / EXAMPLE.name)
    oga = sorted(FREEDESKTOP.glob("*.oga"))
    assert len(oga) >= 10, "needs the freedesktop sound theme: run `bash install.sh` (scripts/install_apt.sh)"
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
    from hear_abt.train.cache_build import open_or_build_cache
    from hear_abt.train.data import list_audio

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
