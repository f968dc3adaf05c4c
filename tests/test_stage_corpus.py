"""Multi-call staging of a corpus (python -m eval.corpus.pack --shards, tools/stage_corpus.py),
simulated on CPU: each call runs from a fresh copy of a tiny working tree that
carries one pack, and only the stage folder outside it persists between calls."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from eval.corpus import pack as pack_corpus

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "hear_abt" / "examples" / "speech_and_bell.wav"


def _corpus(folder: Path, n: int = 9) -> Path:
    """n 16 kHz clips of the bundled recording (shifted), in three (origin, kind) groups."""
    x, sr = sf.read(EXAMPLE, dtype="float32")
    folder.mkdir()
    with (folder / "manifest.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "kind", "seconds", "sources", "origin"])
        for i in range(n):
            name = f"clip{i}.wav"
            sf.write(folder / name, np.roll(x, 3000 * i), sr)
            kind, origin = [("speech", "pkg-a"), ("music", "pkg-b"), ("environment", "pkg-b")][i % 3]
            w.writerow([name, kind, f"{len(x) / sr:.3f}", "example", origin])
    return folder


def _pack_rows(pack: Path) -> list[dict]:
    with (pack / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _packs(tmp_path: Path, k: int = 3) -> Path:
    corpus = _corpus(tmp_path / "corpus")
    out = tmp_path / "packs"
    assert pack_corpus.main(["--corpus", str(corpus), "--out", str(out), "--mib", "0.2", "--workers", "1",
                             "--shards", str(k)]) == 0
    return out


def test_shards_are_disjoint_cover_the_corpus_and_fit(tmp_path):
    out = _packs(tmp_path)
    index = json.loads((out / "shards.json").read_text())
    assert index["shards"] == 3 and index["packs"] == ["pack-00", "pack-01", "pack-02"] and index["clips"] == 9
    stems = [[Path(r["path"]).stem for r in _pack_rows(out / p)] for p in index["packs"]]
    flat = [s for part in stems for s in part]
    assert sorted(flat) == sorted(f"clip{i}" for i in range(9)) and len(set(flat)) == len(flat)  # cover, disjoint
    for p, part in zip(index["packs"], stems):
        files = sorted(f.stem for f in (out / p).glob("*.opus"))
        assert files == sorted(part) and len(part) == 3  # balanced: 3 clips each
        assert {r["kind"] for r in _pack_rows(out / p)} == {"speech", "music", "environment"}  # one of each group
        assert sum(f.stat().st_size for f in (out / p).iterdir()) <= 0.2 * 2**20
        rep = json.loads((out / p / "report.json").read_text())
        assert rep["shards"] == 3 and rep["corpus_id"] == index["corpus_id"]
    before = {f: f.stat().st_mtime_ns for f in out.rglob("*.opus")}
    assert pack_corpus.main(["--corpus", str(tmp_path / "corpus"), "--out", str(out), "--mib", "0.2", "--workers", "1",
                             "--shards", "3"]) == 0  # a rerun finds every pack done
    assert {f: f.stat().st_mtime_ns for f in out.rglob("*.opus")} == before
    with pytest.raises(SystemExit, match="another corpus"):
        pack_corpus.main(["--corpus", str(tmp_path / "corpus"), "--out", str(out), "--mib", "0.2", "--workers", "1",
                          "--shards", "2"])
    with pytest.raises(SystemExit, match="use --shards"):
        pack_corpus.main(["--corpus", str(tmp_path / "corpus"), "--out", str(tmp_path / "big"), "--mib", "0.03",
                          "--workers", "1", "--shards", "1"])
    assert not list((tmp_path / "big").glob("pack-*"))


def test_shards_zero_picks_as_few_packs_as_fit(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    out = tmp_path / "auto"
    assert pack_corpus.main(["--corpus", str(corpus), "--out", str(out), "--mib", "0.2", "--workers", "1", "--shards", "0"]) == 0
    assert json.loads((out / "shards.json").read_text())["shards"] == 1  # 33 s of audio fit in one 0.2 MiB pack


def _call(tmp_path: Path, i: int, pack: Path | None, stage: Path, *args: str) -> subprocess.CompletedProcess:
    """One call to a lent machine: a fresh tree (the code and at most one pack), the stage kept."""
    tree = tmp_path / f"call{i}"
    shutil.rmtree(tree, ignore_errors=True)
    for pkg in ("hear_abt", "tools"):
        shutil.copytree(REPO / pkg, tree / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    cmd = [sys.executable, "-m", "tools.stage_corpus", "--stage-dir", str(stage)]
    if pack is not None:
        shutil.copytree(pack, tree / "packs" / pack.name)
        cmd += ["--pack", f"packs/{pack.name}"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    r = subprocess.run(cmd + list(args), cwd=tree, env=env, capture_output=True, text=True)
    shutil.rmtree(tree)  # the machine's tree does not outlive the call; only the stage does
    return r


@pytest.mark.slow
def test_calls_grow_one_cache_then_train_on_it(tmp_path):
    packs = _packs(tmp_path)
    stage = tmp_path / "stage"
    names = ["pack-00", "pack-01", "pack-02"]
    r = _call(tmp_path, 0, packs / names[0], stage, "--prepare")
    assert r.returncode == 0, r.stderr
    r = _call(tmp_path, 9, None, stage, "--train")
    assert r.returncode != 0 and "not staged yet" in r.stderr
    for i in (1, 2):
        r = _call(tmp_path, i, packs / names[i], stage, "--prepare")
        assert r.returncode == 0, r.stderr
    caches = lambda: sorted(p for p in (stage / "mels").iterdir() if not p.name.startswith("."))  # noqa: E731
    newest = max(caches(), key=lambda p: p.stat().st_mtime_ns)
    cached = (newest / "files.txt").read_text().splitlines()
    want = sorted(f"{stage}/audio/{n}/{r['path']}" for n in names for r in _pack_rows(packs / n))
    assert sorted(cached) == want and len(set(cached)) == 9  # every clip of the corpus, once

    manifest = (stage / "manifest.csv").read_bytes()
    r = _call(tmp_path, 1, packs / names[1], stage, "--prepare")  # a repeated call changes nothing
    assert r.returncode == 0 and "already staged" in r.stdout, r.stderr
    assert (stage / "manifest.csv").read_bytes() == manifest and len(caches()) == 3
    assert (newest / "files.txt").read_text().splitlines() == cached

    run = tmp_path / "run"
    r = _call(tmp_path, 3, None, stage, "--train", "--", "--device", "cpu", "--steps", "2", "--batch-size", "4",
              "--run-dir", str(run), "--set", "crop_frames=16", "--set", "projector=[32,16]", "--set", "workers=0",
              "--set", "mixup_bank=8", "--set", "plot_every=0")
    assert r.returncode == 0, r.stderr
    assert "step 2:" in r.stdout and (run / "state.pt").is_file()
    assert json.loads((run / "config.json").read_text())["data"] == str(stage / "manifest.csv")
