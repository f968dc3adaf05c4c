"""The log-mel cache build: resume after SIGKILL, partial builds of dead or
other processes, workers per core, statistics from the workers' sums."""
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hear_abt.frontend import MelConfig, measure_norm_stats
from hear_abt.train import cache_build as B
from hear_abt.train import data as D

REPO = Path(__file__).resolve().parent.parent
CACHE_FILES = ("mels.f16", "clips.npy", "files.txt", "report.json", "index.json")

# Runs a build of 4-file shards in a child that SIGKILLs itself as soon as
# shard `stop` is recorded: an event, not a timer, places the kill.
KILLED_BUILD = """
import os, signal, sys
from pathlib import Path
from hear_abt.frontend import MelConfig
from hear_abt.train import cache_build as B
from hear_abt.train.data import list_audio
root, data, stop, workers = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
write = B._atomic_json
def after_record(path, obj, fsync=False):
    write(path, obj, fsync)
    if path.parent.name == B.PROGRESS and obj["shard"] == stop:
        os.kill(os.getpid(), signal.SIGKILL)
B._atomic_json = after_record
files = list_audio(data)
B.build_cache(files, MelConfig(), root / B.cache_key(files, MelConfig()), workers=workers, shard_files=4)
"""


def _reference(mel_cache_root: Path) -> Path:
    (ref,) = [p for p in mel_cache_root.iterdir() if p.is_dir() and not p.name.endswith(B.BUILDING)]
    return ref


def on_shard_record(mp: pytest.MonkeyPatch, call) -> None:
    """Run call(shard) as soon as each shard's completion record is on disk."""
    write = B._atomic_json

    def after_record(path, obj, fsync=False):
        write(path, obj, fsync)
        if path.parent.name == B.PROGRESS:
            call(obj["shard"])

    mp.setattr(B, "_atomic_json", after_record)


def _interrupt() -> None:
    raise KeyboardInterrupt


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_killed_build_resumes_its_finished_shards_and_matches_an_uninterrupted_one(audio_corpus, mel_cache_root, tmp_path, caplog):
    root = tmp_path / "cache"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(root), str(audio_corpus), "1", "1"], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == -9, r.stderr[-3000:]
    files = D.list_audio(audio_corpus)
    folder = root / D.cache_key(files, MelConfig())
    tmp = B.building_path(folder)
    assert not folder.exists() and sorted(p.name for p in (tmp / B.PROGRESS).iterdir()) == ["shard-000000.json", "shard-000001.json"]
    with pytest.raises(FileNotFoundError):  # nothing to train on yet
        B.open_or_build_cache(files, MelConfig(), root, build=False)
    owner = json.loads((tmp / "owner.json").read_text())
    assert owner["host"] == socket.gethostname() and owner["pid"] > 0

    decoded: list[int] = []
    real = B._DecodeFiles.__getitem__

    def spy(self, k):
        out = real(self, k)
        decoded.append(out[0])
        return out

    with pytest.MonkeyPatch.context() as mp, caplog.at_level(logging.INFO):
        mp.setattr(B._DecodeFiles, "__getitem__", spy)
        B.build_cache(files, MelConfig(), folder, workers=0, shard_files=4)
    assert decoded == list(range(8, len(files)))  # the two recorded shards were kept, not decoded again
    assert "taking over the partial cache build" in caplog.text and "is dead" in caplog.text
    assert sorted(p.name for p in root.iterdir()) == [folder.name]
    ref = _reference(mel_cache_root)  # built in one go with the default shard size
    assert folder.name == ref.name and sorted(p.name for p in folder.iterdir()) == sorted(CACHE_FILES)
    for name in CACHE_FILES:
        assert (folder / name).read_bytes() == (ref / name).read_bytes(), name


def test_a_shard_written_after_the_last_record_is_dropped(audio_corpus, tmp_path):
    """Data appended after the last record (a kill mid-shard) is cut off, and
    records that do not fit the build's plan start it again."""
    files = D.list_audio(audio_corpus)
    folder = tmp_path / "c" / "k"
    folder.parent.mkdir()

    with pytest.MonkeyPatch.context() as mp:
        on_shard_record(mp, lambda shard: _interrupt() if shard == 0 else None)  # a kill right after shard 0's record
        with pytest.raises(KeyboardInterrupt):
            B.build_cache(files, MelConfig(), folder, workers=0, shard_files=5)
    tmp = B.building_path(folder)
    rec = json.loads((tmp / B.PROGRESS / "shard-000000.json").read_text())
    with open(tmp / "mels.f16", "ab") as f:
        f.write(b"\1" * 1000)  # half a shard that never got its record
    assert B._finished_shards(tmp, 5, len(files)) == [rec]
    assert (tmp / "mels.f16").stat().st_size == rec["end_bytes"]
    assert B._finished_shards(tmp, 7, len(files)) == [] and not (tmp / "mels.f16").exists()  # another plan


def test_another_hosts_live_build_is_named_with_the_rm_command_then_taken_over_when_silent(audio_corpus, tmp_path):
    files = D.list_audio(audio_corpus)[-3:]
    folder = tmp_path / "k"
    tmp = B.building_path(folder)
    tmp.mkdir()
    (tmp / "owner.json").write_text(json.dumps({"host": "node-b7", "pid": 4242, "heartbeat": time.time()}))
    with pytest.raises(B.CacheBuildBusy) as e:
        B.build_cache(files, MelConfig(), folder, workers=0)
    msg = str(e.value)
    assert "pid 4242 on host node-b7" in msg and f"rm -rf '{tmp}'" in msg
    assert tmp.is_dir() and not folder.exists()  # left alone
    (tmp / "owner.json").write_text(json.dumps({"host": "node-b7", "pid": 4242, "heartbeat": time.time() - 1000}))
    B.build_cache(files, MelConfig(), folder, workers=0, stale_after_s=900)
    assert D.MelCache.open(folder).index["listed"] == 3 and not tmp.exists()


def test_a_build_running_on_this_host_is_not_touched(audio_corpus, tmp_path):
    import fcntl

    folder = tmp_path / "k"
    tmp = B.building_path(folder)
    tmp.mkdir()
    (tmp / "owner.json").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}))
    fd = os.open(tmp / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a live builder holds
    try:
        with pytest.raises(B.CacheBuildBusy, match=f"pid {os.getpid()} on host {socket.gethostname()}, which holds its lock"):
            B.build_cache(D.list_audio(audio_corpus)[-2:], MelConfig(), folder, workers=0)
    finally:
        os.close(fd)
    assert (tmp / "owner.json").is_file() and not folder.exists()


def test_old_style_partial_builds_of_dead_processes_are_removed(audio_corpus, tmp_path, caplog):
    folder = tmp_path / "k"
    host = socket.gethostname()
    dead = folder.with_name(f"k.building-{host}-{_dead_pid()}")
    alive = folder.with_name(f"k.building-{host}-{os.getpid()}")
    other = folder.with_name("k.building-node-b7-77")
    for p in (dead, alive, other):
        p.mkdir()
    with caplog.at_level(logging.INFO):
        B._remove_stale_builds(folder)
    assert not dead.exists() and alive.exists() and other.exists()
    assert f"rm -rf '{other}'" in caplog.text


def test_workers_default_to_one_per_core_and_stats_match_measure_norm_stats(mel_cache_root):
    assert B.resolve_workers(-1) == len(os.sched_getaffinity(0)) and B.resolve_workers(0) == 0
    from hear_abt.train.config import TrainConfig

    assert TrainConfig().workers == -1
    cache = D.MelCache.open(_reference(mel_cache_root))
    clips = [torch.from_numpy(np.array(cache.frames[o:o + n])) for o, n in cache.clips]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the decoders sum (float64 sums split over threads differ in the last bit)
    try:
        assert tuple(cache.norm_stats) == measure_norm_stats(clips)
    finally:
        torch.set_num_threads(threads)


def test_main_process_runs_one_torch_thread_while_building(audio_corpus, tmp_path, monkeypatch):
    seen = []
    on_shard_record(monkeypatch, lambda shard: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    B.build_cache(D.list_audio(audio_corpus)[-4:], MelConfig(), tmp_path / "k", workers=0, shard_files=2)
    assert seen == [1, 1] and torch.get_num_threads() == before


def test_an_owner_record_cut_short_is_judged_by_its_age(audio_corpus, tmp_path):
    files = D.list_audio(audio_corpus)[-2:]
    folder = tmp_path / "k"
    tmp = B.building_path(folder)
    tmp.mkdir()
    (tmp / "owner.json").write_text("")  # created, never written: whoever it was may still be starting
    with pytest.raises(B.CacheBuildBusy, match="pid \\? on host \\?"):
        B.build_cache(files, MelConfig(), folder, workers=0)
    os.utime(tmp / "owner.json", (time.time() - 2000, time.time() - 2000))
    B.build_cache(files, MelConfig(), folder, workers=0, stale_after_s=900)
    assert sorted(p.name for p in folder.iterdir()) == sorted(CACHE_FILES) and not tmp.exists()
