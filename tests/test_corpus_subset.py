"""The per-origin draw behind the default's second-stage manifest (eval/corpus/subset.py)."""
from __future__ import annotations

import csv
import random
from collections import Counter
from pathlib import Path

import pytest

from eval.corpus import subset
from hear_abt.train.data import list_audio


def _rows() -> list[dict]:
    rows = [{"file": f"syn-{i:03d}.wav", "kind": "music", "seconds": "10.0", "origin": "synthetic"} for i in range(7)]
    for origin, n in [("pkg-a", 12), ("pkg-b", 3), ("pkg-c", 30)]:
        rows += [{"file": f"real-{origin}-{i:03d}.wav", "kind": "sfx", "seconds": "10.0", "origin": origin}
                 for i in range(n)]
    return rows


def test_keeps_all_synthetic_and_at_most_n_per_origin():
    kept = subset.draw(_rows(), per_origin=5, seed=0)
    assert Counter(r["origin"] for r in kept) == {"synthetic": 7, "pkg-a": 5, "pkg-b": 3, "pkg-c": 5}
    assert [r["file"] for r in kept] == sorted(r["file"] for r in kept)


def test_same_seed_same_draw_whatever_the_row_order():
    rows = _rows()
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert subset.draw(rows, 5, seed=3) == subset.draw(shuffled, 5, seed=3)
    assert subset.draw(rows, 5, seed=3) != subset.draw(rows, 5, seed=4)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="per_origin"):
        subset.draw(_rows(), per_origin=0)
    with pytest.raises(ValueError, match="origin"):
        subset.draw([{"file": "a.wav"}], per_origin=1)


def test_cli_writes_a_manifest_the_trainer_reads(tmp_path: Path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = _rows()
    with open(corpus / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "ft" / "manifest.csv"
    assert subset.main(["--corpus", str(corpus), "--per-origin", "2", "--out", str(out)]) == 0
    assert "13 clips (7 synthetic, 6 real)" in capsys.readouterr().out
    files = list_audio(out)
    assert len(files) == 13 and all(f.startswith(str(corpus.resolve())) for f in files)
    with pytest.raises(SystemExit, match="not found"):
        subset.main(["--corpus", str(tmp_path / "nowhere"), "--per-origin", "2", "--out", str(out)])
