"""Shared fixtures: small real audio, a random-weights checkpoint and the
`--small` mini-HEAR suite."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "hear_abt" / "examples" / "speech_and_bell.wav"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end runs of more than ~30 s on 2 CPU cores; CI runs them too")


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
