"""hear-validator (the HEAR 2021 API checker) accepts a `hear-abt init` checkpoint
and, with no --model, the bundled default checkpoint."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("which", ["random", "default"])
def test_hear_validator_passes(which, rand_ckpt):
    exe = shutil.which("hear-validator")
    assert exe, "hear-validator is not installed: run `bash install.sh`"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    model = ["--model", str(rand_ckpt)] if which == "random" else []  # none: load_model("")
    run = subprocess.run(
        [exe, "hear_abt", *model, "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "Checking get_scene_embeddings" in out and "ModelError" not in out
    # hop and end-of-clip checks printed by the validator
    assert "Max interval between timestamps is 40.0ms" in out
