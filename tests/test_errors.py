"""Library code raises typed errors; only the entry points turn them into an
exit. A notebook can catch what the command line reports, word for word."""
from __future__ import annotations

import subprocess
import sys

import pytest

from hear_abt import errors
from hear_abt.checkpoint import CheckpointError
from hear_abt.train import loop
from hear_abt.train.config import TrainConfig
from hear_abt.train.data import CacheError, list_audio
from hear_abt.train.distributed import DistContext
from hear_abt.train.state import StateError


def test_every_error_is_a_hear_abt_error_and_keeps_its_builtin_type():
    for cls, builtin in ((errors.ConfigError, ValueError), (errors.DataError, ValueError), (errors.TrainError, RuntimeError),
                         (CheckpointError, ValueError), (CacheError, ValueError), (StateError, ValueError),
                         (loop.NonFiniteLossError, RuntimeError)):
        assert issubclass(cls, errors.HearAbtError) and issubclass(cls, builtin), cls
    assert not issubclass(errors.HearAbtError, SystemExit)


def test_a_library_call_raises_the_typed_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(errors.DataError) as e:
        loop.open_cache(TrainConfig(data=str(missing), run_dir=str(tmp_path / "run")), DistContext())
    assert str(e.value) == f"--data {missing}: not a folder or a .csv/.tsv manifest"
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.DataError, match="^no audio files .* under "):
        list_audio(tmp_path / "empty")


def test_the_command_line_prints_the_same_message_and_exits_1(tmp_path):
    missing = tmp_path / "nowhere"
    run = subprocess.run([sys.executable, "-m", "hear_abt.train", "--data", str(missing), "--run-dir", str(tmp_path / "run"),
                          "--steps", "1", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert run.stderr == f"--data {missing}: not a folder or a .csv/.tsv manifest\n"
