"""`hear-abt embed` on corpora: mirrored outputs, batches equal to one-at-a-time,
shards, file lists, bad inputs, and a resume after SIGKILL."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hear_abt import embed_corpus as ec
from hear_abt.cli import main

REPO = Path(__file__).resolve().parent.parent
# Batched clips differ from one-at-a-time ones by float32 rounding only (equal
# lengths, no padding): measured at most 2e-6 relative here. A wrong clip, a
# shifted or padded one differs by far more (checked in the test).
BATCH_RTOL = 1e-5


def _write(path: Path, wav: np.ndarray, sr: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav, sr, subtype="FLOAT")
    return path


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _today(model, f: Path) -> tuple[np.ndarray, np.ndarray]:
    """The one-file-at-a-time path: read_audio, then the HEAR API on a batch of one."""
    from hear_abt import get_scene_embeddings, get_timestamp_embeddings
    from hear_abt.audio_io import read_audio

    x = read_audio(f)[0].unsqueeze(0)
    return get_scene_embeddings(x, model)[0].numpy(), get_timestamp_embeddings(x, model)[0][0].numpy()


def test_batches_equal_one_at_a_time(model, example_wav, tmp_path, monkeypatch):
    wav = example_wav.numpy()
    src = tmp_path / "in"
    # Three lengths, two rates, several clips of each length: batches of 2-4.
    for i in range(9):
        n = (16000, 24000, 40000)[i % 3]
        _write(src / f"c{i}.wav", wav[i * 1000 : i * 1000 + n], 16000)
    for i in range(3):
        _write(src / "hi" / f"d{i}.wav", np.resize(wav, 44100)[::-1].copy() * (0.5 + i / 4), 44100)
    sizes: list[int] = []
    real = ec.embed_batch
    monkeypatch.setattr(ec, "embed_batch", lambda m, clips, *a: sizes.append(len(clips)) or real(m, clips, *a))
    jobs, problems = ec.list_jobs([src])
    s = ec.embed_corpus(model, jobs, tmp_path / "out", timestamps=True, batch_size=8)
    assert s.embedded == 12 and not s.failures and not problems
    assert max(sizes) >= 3 and sum(sizes) == 12  # batching happened
    worst = 0.0
    for j in jobs:
        scene, ts = _today(model, j.src)
        got_scene = np.load(tmp_path / "out" / f"{j.key}.scene.npy")
        got_ts = np.load(tmp_path / "out" / f"{j.key}.timestamps.npy")
        assert got_ts.shape == ts.shape
        worst = max(worst, _rel(got_scene, scene), _rel(got_ts, ts))
    assert worst < BATCH_RTOL
    # The tolerance bites: a neighbour's embedding (a batch mix-up) is far outside it.
    a, b = (np.load(tmp_path / "out" / f"c{i}.scene.npy") for i in (0, 3))
    assert _rel(a, b) > 100 * BATCH_RTOL


def test_mirrored_tree_flat_layout_and_npz(rand_ckpt, example_wav, tmp_path):
    wav = example_wav.numpy()
    src = tmp_path / "in"
    _write(src / "a" / "x.wav", wav[:16000], 16000)
    _write(src / "b" / "x.wav", wav[16000:40000], 16000)
    out = tmp_path / "out"
    main(["embed", str(src), "-o", str(out), "--model", str(rand_ckpt), "--format", "npz", "--workers", "0"])
    z = np.load(out / "a" / "x.npz")
    assert sorted(z.files) == ["embedding", "scene", "timestamps"]  # openl3's keys, plus the scene
    assert z["embedding"].shape == (len(z["timestamps"]), 3072) and z["scene"].shape == (3072,)
    np.testing.assert_allclose(np.diff(z["timestamps"]), 0.04, rtol=1e-6)  # seconds, as openl3
    assert (out / "b" / "x.npz").is_file()
    with pytest.raises(SystemExit) as e:  # flat: both would be x.*
        main(["embed", str(src), "-o", str(tmp_path / "flat"), "--model", str(rand_ckpt), "--layout", "flat"])
    assert e.value.code == 2


def test_from_list_and_stdin(rand_ckpt, example_wav, tmp_path, monkeypatch, capsys):
    wav = example_wav.numpy()
    files = [_write(tmp_path / "in" / d / f"{d}.wav", wav[:16000], 16000) for d in ("p", "q")]
    (tmp_path / "list.txt").write_text(f"# corpus\n{files[0]}\n\n{files[1]}\n")
    main(["embed", "--from-list", str(tmp_path / "list.txt"), "-o", str(tmp_path / "o1"), "--model", str(rand_ckpt)])
    assert sorted(p.relative_to(tmp_path / "o1").as_posix() for p in (tmp_path / "o1").rglob("*.npy")) == [
        "p/p.scene.npy", "q/q.scene.npy"]
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{files[1]}\n"))
    main(["embed", "--from-list", "-", "-o", str(tmp_path / "o2"), "--model", str(rand_ckpt), "--workers", "0"])
    assert [p.name for p in (tmp_path / "o2").rglob("*.npy")] == ["q.scene.npy"]
    assert "embedded 1 of 1 files" in capsys.readouterr().out


def test_shards_cover_the_corpus_once(rand_ckpt, example_wav, tmp_path, monkeypatch):
    wav = example_wav.numpy()
    src = tmp_path / "in"
    for i in range(11):
        _write(src / f"s{i % 3}" / f"f{i:02d}.wav", wav[i * 500 : i * 500 + 8000 + 800 * i], 16000)
    common = ["--model", str(rand_ckpt), "--workers", "0", "--batch-size", "1"]
    main(["embed", str(src), "-o", str(tmp_path / "full"), *common])
    full = {p.relative_to(tmp_path / "full"): np.load(p) for p in (tmp_path / "full").rglob("*.npy")}
    assert len(full) == 11
    seen: dict[Path, np.ndarray] = {}
    for i in range(3):
        out = tmp_path / f"shard{i}"
        if i == 2:  # torchrun's variables stand in for --shard
            monkeypatch.setenv("RANK", "2")
            monkeypatch.setenv("WORLD_SIZE", "3")
            main(["embed", str(src), "-o", str(out), *common])
        else:
            main(["embed", str(src), "-o", str(out), "--shard", f"{i}/3", *common])
        mine = {p.relative_to(out): np.load(p) for p in out.rglob("*.npy")}
        assert mine and not set(mine) & set(seen)  # no file twice
        seen.update(mine)
    assert set(seen) == set(full)
    for k, v in full.items():
        np.testing.assert_array_equal(seen[k], v)
    with pytest.raises(ValueError, match="0 <= I < N"):
        ec.parse_shard("3/3")


def test_bad_inputs_are_reported_and_never_stop_the_others(rand_ckpt, example_wav, tmp_path, capsys, caplog):
    wav = example_wav.numpy()
    src = tmp_path / "in"
    _write(src / "good.wav", wav[:16000], 16000)
    _write(src / "silent.wav", np.zeros(16000, np.float32), 16000)
    _write(src / "zero_length.wav", np.zeros(0, np.float32), 16000)
    (src / "empty.wav").write_bytes(b"")
    (src / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage")
    _write(src / "long.wav", np.resize(wav, 16000 * 3), 16000)  # over --max-duration 2
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("no audio here")
    with pytest.raises(SystemExit) as e:
        main(["embed", str(src), str(tmp_path / "nothing"), "-o", str(tmp_path / "out"), "--model", str(rand_ckpt),
              "--max-duration", "2", "--workers", "1"])
    assert e.value.code == 1
    log = caplog.text
    assert "zero_length.wav: the file holds no samples" in log
    assert "empty.wav: cannot decode audio" in log and "corrupt.wav: cannot decode audio" in log
    assert "long.wav: 3 s long, over the 2 s limit" in log
    assert "nothing: no audio files in this folder" in log
    assert "silent.wav: silent" in log
    out = capsys.readouterr().out
    assert "embedded 2 of 7 files" in out and "5 failed" in out and "1 silent" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.scene.npy", "silent.scene.npy"]


_KILLED_RUN = """
import sys, threading
from hear_abt import embed_corpus
from hear_abt.cli import main

real, stop_after, n = embed_corpus.write_outputs, int(sys.argv[1]), [0]

def write_outputs(outputs):
    if n[0] == stop_after:  # half of this file's output is on disk under its temporary name
        path = next(iter(outputs))
        path.parent.mkdir(parents=True, exist_ok=True)
        embed_corpus.partial_path(path).write_bytes(b"half-written")
        print("BLOCKED", flush=True)
        threading.Event().wait()  # until the test kills the process
    n[0] += 1
    real(outputs)

if __name__ == "__main__":  # decoding workers are spawned: they import this file
    embed_corpus.write_outputs = write_outputs
    main(sys.argv[2:])
"""


@pytest.mark.slow
def test_resume_after_sigkill_redoes_only_missing_files(rand_ckpt, example_wav, tmp_path, capsys):
    wav = example_wav.numpy()
    src = tmp_path / "in"
    for i in range(200):
        _write(src / f"d{i % 4}" / f"t{i:03d}.wav", wav[i * 100 : i * 100 + 1600 + 16 * (i % 7)], 16000)
    args = ["embed", str(src), "--model", str(rand_ckpt), "--batch-size", "1", "-q"]
    main([*args, "-o", str(tmp_path / "ref"), "--workers", "0"])
    ref = {p.relative_to(tmp_path / "ref"): np.load(p) for p in (tmp_path / "ref").rglob("*.npy")}
    assert len(ref) == 200

    script = tmp_path / "killed_run.py"
    script.write_text(textwrap.dedent(_KILLED_RUN))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(script), "77", *args, "-o", str(out), "--workers", "1"],
                            stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "BLOCKED"  # an event, not a timer
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = {p: p.stat() for p in out.rglob("*.npy")}
    assert len(done) == 77
    assert len(list(out.rglob(".*.partial"))) == 1  # the half-written file is there, under its temporary name

    capsys.readouterr()
    main([*args, "-o", str(out), "--workers", "1", "--skip-existing"])
    summary = capsys.readouterr().out
    assert "embedded 123 of 200 files" in summary and "77 already done, skipped" in summary
    for p, st in done.items():  # finished files were not embedded again: not rewritten
        now = p.stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    got = {p.relative_to(out): np.load(p) for p in out.rglob("*.npy")}
    assert set(got) == set(ref)
    for k, v in ref.items():
        np.testing.assert_array_equal(got[k], v)
    assert not list(out.rglob(".*.partial"))

