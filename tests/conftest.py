"""Shared pytest fixtures."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minihear_small(tmp_path_factory) -> Path:
    """The --small mini-HEAR suite (seed 0, no cards), built once per session.

    Returns the tasks folder (one <task>-v1.0-full sub-folder per task), ready
    for heareval's runners. Skips when the Debian audio sources are missing.
    """
    for tool in ("espeak-ng", "fluidsynth", "sox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing: run scripts/install_apt.sh")
    from eval.minihear.build import build_tasks

    out = tmp_path_factory.mktemp("minihear") / "tasks"
    build_tasks(out, seed=0, small=True)
    return out


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: takes more than ~30 s on 2 CPU cores (deselect with -m 'not slow')")
