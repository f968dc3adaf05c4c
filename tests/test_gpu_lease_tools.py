"""The tools a lent GPU call uses: eval/corpus/pack.py (a corpus subset as
Opus, to fit the 64 MiB that travels) and tools/gpu_train.py (runs sized by a
wall-clock budget). Both run here on CPU, on small real audio."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from eval.corpus import pack as pack_corpus
from hear_abt.cli import EXAMPLES_DIR
from tools import gpu_train


def test_water_fill_gives_equal_shares_capped_by_what_a_group_has():
    got = pack_corpus.water_fill({"a": 10.0, "b": 100.0, "c": 100.0}, 110.0)
    assert got["a"] == 10.0 and got["b"] == pytest.approx(50.0) and got["c"] == pytest.approx(50.0)
    assert pack_corpus.water_fill({"a": 1.0, "b": 2.0}, 5.0) == {"a": 1.0, "b": 2.0}  # everything fits


def test_choose_keeps_small_groups_whole_and_is_deterministic():
    rows = [{"file": f"m{i:03d}.wav", "kind": "music", "seconds": "10", "origin": "big"} for i in range(50)]
    rows += [{"file": f"s{i}.wav", "kind": "speech", "seconds": "10", "origin": "small"} for i in range(3)]
    chosen = pack_corpus.choose(rows, 100.0, seed=0)
    assert {r["file"] for r in chosen if r["origin"] == "small"} == {"s0.wav", "s1.wav", "s2.wav"}
    assert sum(r["origin"] == "big" for r in chosen) == 7  # 70 s of the 100 s budget
    assert chosen == pack_corpus.choose(rows, 100.0, seed=0)
    assert chosen != pack_corpus.choose(rows, 100.0, seed=1)


def _corpus(folder: Path) -> Path:
    """Six 16 kHz clips of the bundled real recording, in two (origin, kind) groups."""
    x, sr = sf.read(EXAMPLES_DIR / "speech_and_bell.wav", dtype="float32")
    folder.mkdir()
    with (folder / "manifest.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "kind", "seconds", "sources", "origin"])
        for i in range(6):
            name = f"clip{i}.wav"
            sf.write(folder / name, np.roll(x, 4000 * i), sr)
            w.writerow([name, "speech" if i < 4 else "environment", f"{len(x) / sr:.3f}", "example", "pkg-a" if i < 4 else "pkg-b"])
    return folder


def test_pack_writes_decodable_opus_within_the_limit(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    out = tmp_path / "packed"
    assert pack_corpus.main(["--corpus", str(corpus), "--out", str(out), "--mib", "0.5", "--workers", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    files = sorted(out.glob("*.opus"))
    assert report["clips"] == len(files) == 6  # 22 s of audio fit in 0.5 MiB
    assert sum(f.stat().st_size for f in files) <= 0.5 * 2**20 and 5 < report["kbps"] < 40
    assert report["opus_level"] == pack_corpus.OPUS_LEVEL and 0 < report["logmel_mean_abs_diff_std"] < 0.5
    y, sr = sf.read(files[0], dtype="float32")
    assert sr == 16000 and abs(len(y) - 59000) < 1000 and np.abs(y).max() > 0.01
    with (out / "manifest.csv").open() as f:
        assert [r["path"] for r in csv.DictReader(f)] == [p.name for p in files]
    with pytest.raises(SystemExit, match="exists"):
        pack_corpus.main(["--corpus", str(corpus), "--out", str(out)])
    with pytest.raises(SystemExit, match="manifest.csv"):
        pack_corpus.main(["--corpus", str(tmp_path), "--out", str(tmp_path / "x")])


def test_pack_level_trades_bit_rate_for_fidelity(tmp_path):
    """A higher level means fewer bits and a larger log-mel error; the report says both."""
    corpus = _corpus(tmp_path / "corpus")
    reports = {}
    for level in (0.9, 0.99):
        out = tmp_path / f"packed{level}"
        pack_corpus.main(["--corpus", str(corpus), "--out", str(out), "--mib", "0.5", "--workers", "1", "--level", str(level)])
        reports[level] = json.loads((out / "report.json").read_text())
    assert reports[0.99]["kbps"] < 0.8 * reports[0.9]["kbps"]
    assert reports[0.99]["logmel_mean_abs_diff_std"] > reports[0.9]["logmel_mean_abs_diff_std"]
    with pytest.raises(SystemExit, match="between 0 and 1"):
        pack_corpus.main(["--corpus", str(corpus), "--out", str(tmp_path / "x"), "--level", "1.5"])


def test_pack_drops_clips_until_the_limit_holds(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    out = tmp_path / "packed"
    pack_corpus.main(["--corpus", str(corpus), "--out", str(out), "--mib", "0.025", "--workers", "1"])
    files = list(out.glob("*.opus"))
    assert 0 < len(files) < 6 and sum(f.stat().st_size for f in out.iterdir()) <= 0.025 * 2**20  # the manifest and report too


def test_pack_tops_up_when_the_pilot_overestimates_the_bit_rate(tmp_path, monkeypatch):
    """A cautious first estimate must not leave the limit underfilled: the
    packer encodes more clips at the rate it measured until the room is used."""
    corpus = _corpus(tmp_path / "corpus")
    pack_corpus.main(["--corpus", str(corpus), "--out", str(tmp_path / "true"), "--mib", "0.025", "--workers", "1"])
    fitted = json.loads((tmp_path / "true" / "report.json").read_text())["clips"]
    real_pilot = pack_corpus.pilot
    monkeypatch.setattr(pack_corpus, "pilot", lambda srcs, level: (20 * real_pilot(srcs, level)[0], 0.1))
    out = tmp_path / "cautious"
    pack_corpus.main(["--corpus", str(corpus), "--out", str(out), "--mib", "0.025", "--workers", "1"])
    files = list(out.glob("*.opus"))
    # 20x the rate plans about 1 s, one clip per group; the top-up reaches what fits
    assert len(files) == json.loads((out / "report.json").read_text())["clips"] == fitted > 2
    assert sum(f.stat().st_size for f in out.iterdir()) <= 0.025 * 2**20


def test_pack_refuses_a_limit_with_no_room_for_audio(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    with pytest.raises(SystemExit, match="no room for audio"):
        pack_corpus.main(["--corpus", str(corpus), "--out", str(tmp_path / "x"), "--mib", "0.003", "--workers", "1"])
    with pytest.raises(SystemExit, match="not one clip fits"):
        pack_corpus.main(["--corpus", str(corpus), "--out", str(tmp_path / "y"), "--mib", "0.0045", "--workers", "1"])
    assert not (tmp_path / "y").exists() and not (tmp_path / "y.partial").exists()


def test_run_arguments_and_step_budget():
    assert gpu_train.parse_run("lr0.8:lr_weights=0.8,lr_biases=0.0192") == ("lr0.8", {"lr_weights": "0.8", "lr_biases": "0.0192"})
    assert gpu_train.parse_run("pitch:rrc_freq_scale=[1.0,1.0],lr_weights=0.4") == (
        "pitch", {"rrc_freq_scale": "[1.0,1.0]", "lr_weights": "0.4"})
    for bad in (":lr_weights=1", "a/b:x=1", "a:lr_weights"):
        with pytest.raises(SystemExit):
            gpu_train.parse_run(bad)
    assert gpu_train.steps_for(115.0, 1024.0, 128, 15.0) == 800
    assert gpu_train.steps_for(10.0, 1024.0, 128, 15.0) == 10  # never fewer than 10


def test_a_bad_run_config_stops_before_any_training(tmp_path):
    with pytest.raises(SystemExit, match="--run b: config error"):
        gpu_train.main(["--data", str(tmp_path), "--out", str(tmp_path / "out"), "--budget-s", "5", "--device", "cpu",
                        "--run", "a:lr_weights=0.2", "--run", "b:no_such_key=1"])
    assert not (tmp_path / "out" / "runs.json").exists()


@pytest.mark.slow
def test_budgeted_runs_export_loadable_encoders(tmp_path):
    """Two tiny runs on CPU: each is sized by the measured rate, exported as an
    fp16 HEAR checkpoint, and summarised in runs.json."""
    import hear_abt
    from hear_abt.hear_api import default_checkpoint_path

    corpus = _corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    rc = gpu_train.main(["--data", str(corpus / "manifest.csv"), "--out", str(out), "--work", str(tmp_path / "work"),
                         "--budget-s", "12", "--overhead-s", "4", "--device", "cpu",
                         "--set", "batch_size=4", "--set", "projector=[64,32]", "--set", f"cache_dir={tmp_path / 'mels'}",
                         "--run", "a:lr_weights=0.2", "--run", "b:lr_weights=0.4",
                         "--run", f"cont:lr_weights=0,lr_biases=0,init_from={default_checkpoint_path()}"])
    assert rc == 0
    summary = json.loads((out / "runs.json").read_text())
    assert set(summary["runs"]) == {"a", "b", "cont"}
    # A continued run starts from the default's encoder (what scripts/gpu_lease.sh does with a lent GPU).
    # At learning rate 0 it must come back unchanged, however many steps this machine's speed buys;
    # a run from random weights ends far from it.
    def weights(path: str = "") -> torch.Tensor:
        return torch.cat([p.detach().flatten().float() for p in hear_abt.load_model(path).parameters()])

    default, cont, scratch = weights(), weights(str(out / "cont.pt")), weights(str(out / "a.pt"))
    assert torch.equal(cont, default)
    assert float((scratch - default).norm() / default.norm()) > 0.1  # measured: 0.48
    for name, lr in (("a", 0.2), ("b", 0.4)):
        run = summary["runs"][name]
        assert run["status"] == "ok" and run["steps"] >= 10 and run["config"]["lr_weights"] == lr
        assert run["probe_samples_per_s"] > 0 and all(np.isfinite(float(r["loss"])) for r in run["log"])
        model = hear_abt.load_model(str(out / f"{name}.pt"))
        emb = hear_abt.get_scene_embeddings(torch.zeros(1, 16000), model)
        assert emb.shape == (1, 3072) and torch.isfinite(emb).all()
        assert not (tmp_path / "work" / name).exists()  # the GB-sized training state is not left behind
