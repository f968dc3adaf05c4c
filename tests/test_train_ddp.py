"""DDP equivalence: 2 CPU processes (gloo, via torchrun) == 1 process, same global batch.

What makes it hold: every process draws the augmentation parameters of the
whole global batch and applies its slice; the Mixup bank receives the
all-gathered global batch; BatchNorms use global-batch statistics
(GlobalBatchNorm on CPU, SyncBatchNorm on CUDA); the loss sums the
cross-correlation over processes with a differentiable all_reduce. Dropout
masks are per-process draws and cannot match, so the test sets dropout to 0.
Only float summation order differs, and three LARS steps amplify it, so the
weights are compared as a share of the update they received (not elementwise).
"""
import csv
import os
import subprocess
import sys

import torch

from hear_abt.encoders import build_encoder
from hear_abt.train import loop
from hear_abt.train.barlow import BarlowTwinsModel
from hear_abt.train.data import derive_seed

# Measured 2026-11-29 on a Xeon (AVX-512), also limited to AVX2 and to SSE4.1
# (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) and with 2 threads in the one-process
# run. Rounding alone: losses 8e-7 relative; all weights together 1.3e-7 to 1.2e-5
# of the update's norm; the worst single tensor 1.7e-3 of its own update. With
# per-process BatchNorm instead (the bug this guards against): losses 0.18,
# all weights 0.13, single tensors 1.4-1.6. An elementwise atol of 1e-6 failed
# on rounding alone (fc biases differed by 4.7e-5 after updates of 2.8e-2).
LOSS_RTOL = 1e-3
WEIGHTS_SHARE = 1e-2  # |two - one| / |one - initial| over all weights
TENSOR_SHARE = 0.1  # the same per tensor, for tensors with a real update (below)


def test_two_processes_match_one(tiny_config, tmp_path):
    kw = dict(batch_size=8, steps=3, encoder_kwargs={"dropout": 0.0}, ckpt_every=0)
    one = tiny_config(run_dir=str(tmp_path / "one"), **kw)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same thread count as each torchrun process (OMP_NUM_THREADS=1 below)
    try:
        loop.train(one)
    finally:
        torch.set_num_threads(threads)
    two = tiny_config(run_dir=str(tmp_path / "two"), **kw)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "hear_abt.train", "--data", two.data, "--cache-dir", two.cache_dir, "--run-dir", two.run_dir,
        "--steps", "3", "--batch-size", "8", "--device", "cpu",
        "--set", "crop_frames=16", "--set", "projector=[32,16]", "--set", "mixup_bank=8", "--set", "workers=0",
        "--set", "encoder_kwargs.dropout=0", "--set", "ckpt_every=0", "--set", "log_every=1", "--set", "plot_every=0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]

    def losses(run):
        with open(os.path.join(run, "log.csv")) as f:
            return torch.tensor([float(row["loss"]) for row in csv.DictReader(f)])

    l1, l2 = losses(one.run_dir), losses(two.run_dir)
    assert len(l1) == len(l2) == 3
    torch.testing.assert_close(l2, l1, rtol=LOSS_RTOL, atol=0.0)
    s1 = torch.load(loop.state_path(one.run_dir), weights_only=True)
    s2 = torch.load(loop.state_path(two.run_dir), weights_only=True)
    assert s1["config"] == {**s2["config"], "run_dir": one.run_dir}
    torch.manual_seed(derive_seed(one.seed, "init"))  # the initial weights, as loop.train draws them
    initial = BarlowTwinsModel(build_encoder(one.encoder, **one.encoder_kwargs), one.projector).state_dict()
    assert s1["model"].keys() == s2["model"].keys() == initial.keys()
    floats = [k for k, v in s1["model"].items() if v.is_floating_point()]
    diff = {k: (s2["model"][k] - s1["model"][k]).double().norm() for k in floats}
    update = {k: (s1["model"][k] - initial[k]).double().norm() for k in floats}
    total_update = torch.stack(list(update.values())).norm()
    assert total_update > 0
    share = torch.stack(list(diff.values())).norm() / total_update
    assert share < WEIGHTS_SHARE, f"weights differ by {share:.2e} of the update"
    # Conv biases ahead of a BatchNorm get no gradient (only weight decay moves
    # them, by ~1e-7), so a share of their update is rounding over rounding.
    for k in floats:
        if update[k] > 1e-3 * total_update:
            assert diff[k] / update[k] < TENSOR_SHARE, f"{k}: {diff[k] / update[k]:.2e} of its update"
    for k in s1["model"].keys() - set(floats):  # BatchNorm's step counters
        assert torch.equal(s1["model"][k], s2["model"][k]), k
    torch.testing.assert_close(s2["mixup"]["bank"], s1["mixup"]["bank"])
