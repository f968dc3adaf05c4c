"""Shared fixtures: small real audio and a random-weights checkpoint."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parent.parent / "hear_abt" / "examples" / "speech_and_bell.wav"


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
