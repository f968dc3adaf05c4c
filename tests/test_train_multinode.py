"""Multi-process safety on CPU (gloo): a missing or differing node cache stops
every process at once with a clear message, and the Mixup exchange sends only
the rows the bank keeps yet fills it exactly as the whole batch did."""
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hear_abt.errors import DataError
from hear_abt.train import distributed as D
from hear_abt.train.augment import MixupBank
from hear_abt.train.cache_build import open_training_cache
from hear_abt.train.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
KEEP = (0, 1, 3, 4, 5, 8, 20)  # bank sizes: none, within one rank, a rank boundary, across both, more than the batch


def _worker(rank: int, world: int, init: str, out: str, cases: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    ctx = D.DistContext(rank, world, rank, torch.device("cpu"))
    res: dict = {}
    try:
        full = torch.randn(8, 1, 4, 5, generator=torch.Generator().manual_seed(0))
        x = full[rank * 4 : (rank + 1) * 4]
        for n in KEEP:
            tail = D.gather_tail(x, n, ctx)
            res[f"tail{n}"] = torch.equal(tail, D.all_gather_cat(x, ctx)[max(0, 8 - n):]) and torch.equal(tail, full[max(0, 8 - n):])
            bounded, whole = MixupBank(0.2, n), MixupBank(0.2, n)
            for step in range(3):  # wraps the ring
                xs = x + step
                bounded.push(D.gather_tail(xs, n, ctx))
                whole.push(D.all_gather_cat(xs, ctx))
            a, b = bounded.state(), whole.state()
            res[f"bank{n}"] = (a["count"], a["ptr"]) == (b["count"], b["ptr"]) and (
                a["bank"] is None and b["bank"] is None or torch.equal(a["bank"], b["bank"]))
        for name, per_rank in cases.items():
            try:
                cache = open_training_cache(TrainConfig(**per_rank[rank]), ctx)
                res[name] = f"ok {cache.folder}"
            except DataError as e:
                res[name] = str(e)
    finally:
        Path(out, f"{rank}.json").write_text(json.dumps(res))
        dist.destroy_process_group()


def test_two_gloo_processes_check_each_nodes_cache_and_exchange_only_kept_rows(audio_corpus, mel_cache_root, tmp_path):
    (built,) = [p for p in mel_cache_root.iterdir() if p.is_dir() and "." not in p.name]
    other = tmp_path / "other-copy"  # a node whose copy was built from something else
    shutil.copytree(built, other)
    index = json.loads((other / "index.json").read_text())
    index["norm_stats"][0] += 0.5
    (other / "index.json").write_text(json.dumps(index))
    base = dict(data=str(audio_corpus), cache_dir=str(mel_cache_root), device="cpu")
    cases = {
        "same": [dict(base), dict(base, data=str(built))],  # audio + cache root, or the copied folder: one key
        "differ": [dict(base, data=str(built)), dict(base, data=str(other))],
        "missing": [dict(base), dict(base, cache_dir=str(tmp_path / "empty"))],
    }
    out = tmp_path / "out"
    out.mkdir()
    t0 = time.monotonic()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out), cases), nprocs=2, join=True)
    elapsed = time.monotonic() - t0
    res = [json.loads((out / f"{r}.json").read_text()) for r in range(2)]
    for r in res:
        for n in KEEP:
            assert r[f"tail{n}"] and r[f"bank{n}"], n
        assert r["same"] == f"ok {built}"
        assert "the nodes' log-mel caches differ" in r["differ"] and str(index["norm_stats"][0]) in r["differ"]
        host = socket.gethostname()
        assert f"node {host} (rank 1): no log-mel cache at {tmp_path / 'empty'}" in r["missing"]
        assert f"--prepare --data {audio_corpus} --cache-dir {tmp_path / 'empty'}" in r["missing"]
        assert "(rank 0)" not in r["missing"]
    assert not (tmp_path / "empty").exists()  # nobody built
    assert elapsed < 120


def test_torchrun_with_a_missing_cache_fails_within_seconds(audio_corpus, tmp_path):
    empty = tmp_path / "nocache"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hear_abt.train", "--data", str(audio_corpus), "--cache-dir", str(empty), "--run-dir", str(tmp_path / "run"),
           "--steps", "1", "--batch-size", "4", "--device", "cpu", "--set", "workers=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    elapsed = time.monotonic() - t0
    assert r.returncode != 0
    assert f"node {socket.gethostname()} (ranks 0, 1): no log-mel cache at {empty}" in r.stderr, r.stderr[-3000:]
    assert f"python -m hear_abt.train --prepare --data {audio_corpus} --cache-dir {empty}" in r.stderr
    assert not empty.exists() or not any(empty.rglob("index.json"))
    # torchrun and two torch imports take a few seconds on 2 loaded cores; a wait at a
    # barrier would last the process group's 2 h timeout.
    assert elapsed < 60, elapsed
