"""The GPU correctness checks (marker `gpu`), runnable on any device.

The device comes from $HEAR_ABT_CHECK_DEVICE (default cpu), the inputs from
the folder `python -m tools.gpu_check --prepare` writes ($HEAR_ABT_CHECK_PREPARED;
without it a small one is built here, which needs soundfile). On a GPU machine:

    HEAR_ABT_CHECK_DEVICE=cuda python -m pytest -m gpu tests/test_gpu.py

tools/gpu_check.py calls the same functions (and needs no pytest). On CPU the
default suite runs them on CPU, so none of this code goes untested there:
"device equals CPU" is then CPU vs CPU, the rest is the real CPU path (gloo,
GlobalBatchNorm, bf16 autocast on CPU).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tools import gpu_check as G

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
DEVICE = os.environ.get("HEAR_ABT_CHECK_DEVICE", "cpu")
ON_CPU = DEVICE == "cpu"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> G.Prepared:
    folder = os.environ.get("HEAR_ABT_CHECK_PREPARED")
    if folder:
        return G.Prepared(Path(folder))
    return G.Prepared(G.prepare(tmp_path_factory.mktemp("gpu_prep") / "prep", n_clips=40))


def test_every_encoder_on_device_equals_cpu(prepared):
    worst = G.check_encoders_match_cpu(prepared, DEVICE, list(G.ENCODERS), seconds=2.0)
    assert set(worst) == set(G.ENCODERS)


def test_bf16_trainer_step_is_finite_and_close_to_fp32(prepared):
    r = G.check_bf16_step(prepared, DEVICE, batch=16 if ON_CPU else 256, projector=(256, 128) if ON_CPU else (8192, 1048))
    assert r["loss_bf16"] != r["loss_fp32"]  # autocast really ran in bf16


def test_torchrun_one_process_two_steps(prepared):
    r = G.check_torchrun(prepared, DEVICE, batch=8)
    assert r["world_size"] == 1 and r["backend"] == ("gloo" if ON_CPU else "nccl") and len(r["losses"]) == 2
    assert r["bn_kind"] == ("GlobalBatchNorm" if ON_CPU else "SyncBatchNorm") and r["sync_bn_layers"] >= 3


@pytest.mark.slow
def test_hear_validator_on_device():
    """Runs on CPU too (where tests/test_validator.py covers the same ground), so
    gpu_check's validator path is exercised in CI rather than skipped."""
    try:
        G.check_validator(DEVICE)
    except G.NotRun as e:
        pytest.skip(str(e))
