"""tools/gpu_check.py's CPU path, so the GPU script cannot rot between GPU loans."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.gpu_check", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=1200)


def test_missing_prepared_folder_is_one_clear_line(tmp_path):
    r = run("--device", "cpu", "--quick", "--prepared", str(tmp_path / "nothing"), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "out" / "gpu_check.json").read_text())["rows"]
    assert {row["section"] for row in rows} == {"setup"} and rows[-1]["item"] == "prepared folder"
    assert rows[-1]["status"] == "not run" and "--prepare" in rows[-1]["detail"]


def test_cpu_path_end_to_end(tmp_path):
    prep, out = tmp_path / "prep", tmp_path / "out"
    r = run("--prepare", "--prepared", str(prep), "--clips", "40")
    assert r.returncode == 0, r.stderr[-2000:]
    # the lease script's route: a second prepared folder over the cache that is already there
    linked = tmp_path / "linked"
    r = run("--prepare", "--from-cache", str(prep / "mel_cache"), "--prepared", str(linked))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (linked / "mel_cache").resolve() == (prep / "mel_cache").resolve()
    r = run("--device", "cpu", "--quick", "--prepared", str(linked), "--out", str(out))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    by_section: dict[str, list] = {}
    for row in report["rows"]:
        by_section.setdefault(row["section"], []).append(row)
    assert {"setup", "correctness", "train", "embed"} <= set(by_section)
    assert all(row["status"] == "ok" for row in report["rows"] if "hear-validator" not in row["item"]), report["rows"]
    assert all(row["result"]["samples_per_s"] > 0 for row in by_section["train"] if "batch 16" in row["item"] and "data path" not in row["item"])
    from hear_abt.encoders import ENCODERS

    assert {row["item"].split(",")[0] for row in by_section["embed"]} == set(ENCODERS)
    assert all(row["result"]["rtf_timestamp"] > 0 and row["result"]["rtf_scene"] > 0 for row in by_section["embed"])
    table = (out / "gpu_check.md").read_text()
    assert table.count("\n| ") == len(report["rows"]) + 1  # header + one line per row


def test_from_cache_needs_prepare_and_a_cache(tmp_path):
    r = run("--from-cache", str(tmp_path), "--device", "cpu", "--out", str(tmp_path / "out"))
    assert r.returncode != 0 and "--from-cache applies to --prepare only" in r.stderr
    r = run("--prepare", "--from-cache", str(tmp_path), "--prepared", str(tmp_path / "p"))
    assert r.returncode != 0 and "not a log-mel cache folder" in r.stderr and not (tmp_path / "p").exists()
