"""The loop: exact resume, export through load_model, NaN guard, config plumbing.

Below: value-by-value tests written to kill mutation-testing survivors (tools/mutation.py).
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import EXAMPLE, fake_state

import hear_abt
from hear_abt.errors import ConfigError, DataError, TrainError
from hear_abt.train import loop
from hear_abt.train import state as train_state
from hear_abt.train.__main__ import main
from hear_abt.train.config import TrainConfig
from hear_abt.train.data import MelCache


def load(run_dir):
    return torch.load(loop.state_path(run_dir), weights_only=True)


def test_resume_is_bitwise_exact(tiny_config, tmp_path):
    """4 steps straight == 2 steps, stop (as if killed after the checkpoint),
    resume, 2 more: weights, optimiser, memory bank and losses all identical.
    Dropout is on (0.3, the default), so per-step re-seeding is tested too."""
    straight = tiny_config(run_dir=str(tmp_path / "a"))
    s = loop.train(straight)
    split = tiny_config(run_dir=str(tmp_path / "b"))
    first = loop.train(split, stop_at=2)
    assert first["step"] == 2 and first["exported"] is None
    second = loop.train(split, resume=True)
    a, b = load(tmp_path / "a"), load(tmp_path / "b")
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    n_params = sum(len(g["params"]) for g in a["optimizer"]["param_groups"])
    assert n_params > 0 and len(a["optimizer"]["state"]) == len(b["optimizer"]["state"]) == n_params  # stepped
    for k, sa in a["optimizer"]["state"].items():
        assert torch.equal(sa["mu"], b["optimizer"]["state"][k]["mu"]), k
    assert torch.equal(a["mixup"]["bank"], b["mixup"]["bank"]) and a["mixup"]["count"] == 8
    assert s["losses"] == first["losses"] + second["losses"]
    rows = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]  # no duplicated rows after resume


def test_export_loads_through_hear_api(tiny_config, tmp_path):
    cfg = tiny_config(steps=2, plot_every=2)
    summary = loop.train(cfg)
    run = tmp_path / "run"
    assert (run / "plots" / "loss.png").is_file() and (run / "plots" / "xcorr.png").is_file()
    assert json.loads((run / "config.json").read_text())["batch_size"] == 4
    main(["--run-dir", str(run), "--export", str(tmp_path / "again.pt")])
    for path in (summary["exported"], tmp_path / "again.pt"):
        model = hear_abt.load_model(str(path))
        emb = hear_abt.get_scene_embeddings(torch.zeros(2, 16000).uniform_(-0.1, 0.1), model)
        assert emb.shape == (2, 3072) and torch.isfinite(emb).all()
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["train_config"]["projector"] == [32, 16] and ckpt["step"] == 2
        assert ckpt["norm_stats"] == load(run)["norm_stats"]
        assert torch.equal(ckpt["state_dict"]["features.0.weight"], load(run)["model"]["encoder.features.0.weight"])
    main(["--run-dir", str(run), "--export", str(tmp_path / "half.pt"), "--fp16"])
    half = torch.load(tmp_path / "half.pt", weights_only=True)
    assert half["state_dict"]["features.0.weight"].dtype == torch.float16
    assert (tmp_path / "half.pt").stat().st_size < 0.6 * (tmp_path / "again.pt").stat().st_size
    x = torch.zeros(2, 16000).uniform_(-0.1, 0.1)
    a, b = (hear_abt.get_scene_embeddings(x, hear_abt.load_model(str(p))) for p in (tmp_path / "again.pt", tmp_path / "half.pt"))
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.9999


def test_nan_guard_stops_after_k_bad_steps(tiny_config, tmp_path, mel_cache_root):
    root = tmp_path / "nancache"
    shutil.copytree(mel_cache_root, root)
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    mm = np.memmap(folder / "mels.f16", dtype=np.float16, mode="r+")
    mm[:] = np.nan
    mm.flush()
    del mm
    cfg = tiny_config(cache_dir=str(root), max_bad_steps=2)
    with pytest.raises(loop.NonFiniteLossError, match="2 non-finite losses in a row"):
        loop.train(cfg)
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert rows[1].split(",")[1] == "nan" and rows[1].split(",")[6] == "1"


def test_cli_config_file_overrides_and_resume_guard(tiny_config, tmp_path, capsys):
    cfg = tiny_config(steps=1)
    conf = tmp_path / "c.yaml"
    conf.write_text("crop_frames: 16\nprojector: [32, 16]\nworkers: 0\nlambd: 0.01\n")
    common = ["--data", cfg.data, "--cache-dir", cfg.cache_dir, "--run-dir", cfg.run_dir, "--config", str(conf)]
    main(common + ["--steps", "1", "--batch-size", "4", "--set", "encoder_kwargs.dropout=0.1", "--print-config"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["lambd"] == 0.01 and printed["encoder_kwargs"] == {"dropout": 0.1} and printed["steps"] == 1
    with pytest.raises(SystemExit, match="unknown config key"):
        main(common + ["--set", "lamda=1"])
    main(common + ["--steps", "1", "--batch-size", "4"])
    assert load(cfg.run_dir)["config"]["lambd"] == 0.01
    with pytest.raises(SystemExit, match="already holds a training state"):
        main(common + ["--steps", "2", "--batch-size", "4"])
    with pytest.raises(SystemExit, match="batch_size"):
        main(common + ["--steps", "2", "--batch-size", "8", "--resume"])
    main(["--run-dir", cfg.run_dir, "--resume", "--steps", "2"])  # config and data from the state
    assert load(cfg.run_dir)["step"] == 2


def test_bf16_autocast_and_channels_last_paths(tiny_config):
    """The GPU options (bf16 autocast, channels-last) exercised on the CPU."""
    s = loop.train(tiny_config(steps=2, amp="bf16", channels_last=True, ckpt_every=0))
    assert len(s["losses"]) == 2 and all(torch.isfinite(torch.tensor(s["losses"])))


def test_override_parsing():
    from hear_abt.train.config import TrainConfig, parse_overrides

    o = parse_overrides(["weight_decay=1e-5", "projector=[64, 32]", "channels_last=true", "encoder_kwargs={dropout: 0.1}", "data=a b"])
    cfg = TrainConfig().replace(o)
    assert cfg.weight_decay == 1e-5 and cfg.projector == [64, 32] and cfg.channels_last is True
    assert cfg.encoder_kwargs == {"dropout": 0.1} and cfg.data == "a b"
    assert TrainConfig().replace({"weight_decay": "1e-5"}).weight_decay == 1e-5  # YAML 1.1 string
    with pytest.raises(ValueError, match="takes a number"):
        TrainConfig().replace({"lambd": "lots"})


def _zero_grad_biases(model: torch.nn.Module) -> set[str]:
    """Biases feeding a BatchNorm directly: in training mode BN subtracts the
    batch mean, so their gradient is zero up to rounding and they may not move."""
    out = set()
    for prefix, m in model.named_modules():
        kids = list(m.named_children()) if isinstance(m, torch.nn.Sequential) else []
        for (name, a), (_, b) in zip(kids, kids[1:]):
            if getattr(a, "bias", None) is not None and isinstance(b, torch.nn.modules.batchnorm._BatchNorm):
                out.add(f"{prefix}.{name}.bias".lstrip("."))
    return out


def test_training_learns(tiny_config, tmp_path):
    """~30 steps: the loss falls clearly and every trainable tensor moves (a
    loop without opt.step() fails both)."""
    from hear_abt.encoders import build_encoder
    from hear_abt.train.barlow import BarlowTwinsModel

    # Batch 32 of the 36 corpus clips: every batch is nearly the whole corpus, so
    # the loss is not dominated by which clips a batch holds (batch 4 is too noisy).
    cfg = tiny_config(steps=30, batch_size=32, mixup_bank=64, ckpt_every=0, log_every=10)
    loop.train(cfg, stop_at=0)  # the state at step 0: the initial weights
    w0 = load(cfg.run_dir)["model"]
    s = loop.train(cfg, resume=True)
    w1 = load(cfg.run_dir)["model"]
    losses = s["losses"]
    assert len(losses) == 30 and all(np.isfinite(losses))
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.7 * first, (first, last)  # measured: 6.4 -> 2.9 (seed 0); a loop that never steps: ~1
    names = [n for n, p in BarlowTwinsModel(build_encoder(cfg.encoder), cfg.projector).named_parameters() if p.requires_grad]
    frozen = _zero_grad_biases(BarlowTwinsModel(build_encoder(cfg.encoder), cfg.projector))
    assert frozen == {"encoder.features.0.bias", "encoder.features.4.bias"}  # AudioNTT's two conv biases
    for n in names:
        if n not in frozen:
            rel = float((w1[n] - w0[n]).norm() / w0[n].norm().clamp(min=1e-12))
            assert rel > 1e-4, (n, rel)


def test_non_finite_step_leaves_no_trace(tiny_config, tmp_path, monkeypatch):
    """A NaN batch at step 2: weights, BatchNorm statistics, optimiser and Mixup
    bank after it equal the state before it; the next good step trains on."""
    from hear_abt.train.data import MelCache

    cfg = tiny_config(steps=4, ckpt_every=0)
    loop.train(cfg, stop_at=2)
    before = load(cfg.run_dir)
    real = MelCache.crops
    monkeypatch.setattr(MelCache, "crops", lambda self, *a: torch.full_like(real(self, *a), float("nan")))
    s = loop.train(cfg, resume=True, stop_at=3)
    after = load(cfg.run_dir)
    assert s["losses"] and np.isnan(s["losses"][0]) and after["step"] == 3 and after["bad_steps_total"] == 1
    for k, v in before["model"].items():  # includes every BatchNorm's running_mean / running_var / count
        assert torch.equal(after["model"][k], v), k
    assert before["optimizer"]["state"] and before["optimizer"]["state"].keys() == after["optimizer"]["state"].keys()
    for k, v in before["optimizer"]["state"].items():
        assert torch.equal(after["optimizer"]["state"][k]["mu"], v["mu"]), k
    assert (after["mixup"]["count"], after["mixup"]["ptr"]) == (before["mixup"]["count"], before["mixup"]["ptr"])
    assert torch.equal(after["mixup"]["bank"], before["mixup"]["bank"])
    monkeypatch.setattr(MelCache, "crops", real)
    s = loop.train(cfg, resume=True)
    final = load(cfg.run_dir)
    assert np.isfinite(s["losses"]).all() and final["bad_steps_total"] == 1
    assert all(torch.isfinite(v.float()).all() for v in final["model"].values())
    assert not torch.equal(final["model"]["encoder.features.0.weight"], before["model"]["encoder.features.0.weight"])


def test_unknown_encoder_is_refused_at_parse_time(capsys):
    from hear_abt.encoders import ENCODERS
    from hear_abt.train.config import TrainConfig

    with pytest.raises(ValueError, match="unknown encoder 'vit_base'; registered encoders: audiontt, resnet18") as e:
        TrainConfig(encoder="vit_base")
    assert all(name in str(e.value) for name in ENCODERS)
    with pytest.raises(SystemExit, match="config error: unknown encoder 'vit_base'.*vitc_base"):
        main(["--set", "encoder=vit_base", "--print-config"])
    with pytest.raises(SystemExit, match="unknown encoder 'nope'"):
        main(["--encoder", "nope", "--print-config"])
    assert capsys.readouterr().out == ""  # nothing printed
    main(["--encoder", "vitc_tiny", "--print-config"])
    assert json.loads(capsys.readouterr().out)["encoder"] == "vitc_tiny"


def test_init_from_starts_from_the_checkpoint_and_keeps_its_stats(tiny_config, tmp_path):
    """--init-from: the encoder starts as the checkpoint's, the projector as a
    fresh run's, and the checkpoint's normalisation (not the new cache's) is
    used from step 0 through resume to the export."""
    from hear_abt.checkpoint import load_checkpoint, save_checkpoint

    first = loop.train(tiny_config(run_dir=str(tmp_path / "a"), steps=2))
    ckpt = load_checkpoint(first["exported"])
    ckpt["norm_stats"] = [1.5, 2.5]  # unlike any cache's, so a silent fallback shows
    save_checkpoint(ckpt, tmp_path / "init.pt")
    loop.train(tiny_config(run_dir=str(tmp_path / "b"), init_from=str(tmp_path / "init.pt"), seed=1), stop_at=0)
    loop.train(tiny_config(run_dir=str(tmp_path / "fresh"), seed=1), stop_at=0)
    b, fresh = load(tmp_path / "b"), load(tmp_path / "fresh")
    assert b["step"] == 0 and b["norm_stats"] == [1.5, 2.5] and fresh["norm_stats"] != [1.5, 2.5]
    for k, v in ckpt["state_dict"].items():
        assert torch.equal(b["model"][f"encoder.{k}"], v), k
        assert not torch.equal(fresh["model"][f"encoder.{k}"], v) or v.dtype == torch.long or not v.any(), k
    projector = [k for k in b["model"] if k.startswith("projector.")]
    assert projector and all(torch.equal(b["model"][k], fresh["model"][k]) for k in projector)
    done = loop.train(tiny_config(run_dir=str(tmp_path / "b"), init_from=str(tmp_path / "init.pt"), seed=1), resume=True)
    out = torch.load(done["exported"], weights_only=True)
    assert out["norm_stats"] == [1.5, 2.5] and out["step"] == 4
    assert "init_from" in out["provenance"]["norm_stats_source"] and out["train_config"]["init_from"].endswith("init.pt")


def test_init_from_refuses_what_cannot_start_the_run(tiny_config, tmp_path):
    from hear_abt.checkpoint import load_checkpoint, save_checkpoint

    with pytest.raises(ConfigError, match="init_from: checkpoint not found"):
        loop.train(tiny_config(init_from=str(tmp_path / "missing.pt")))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="init_from: .*junk.pt is not a readable checkpoint"):
        loop.train(tiny_config(init_from=str(tmp_path / "junk.pt")))
    first = loop.train(tiny_config(run_dir=str(tmp_path / "a"), steps=2))
    with pytest.raises(ConfigError, match="holds encoder audiontt .* the run asks for resnet18"):
        loop.train(tiny_config(run_dir=str(tmp_path / "c"), init_from=str(first["exported"]), encoder="resnet18"))
    ckpt = load_checkpoint(first["exported"])
    ckpt["mel"] = {**ckpt["mel"], "n_mels": 80}
    save_checkpoint(ckpt, tmp_path / "mel80.pt")
    with pytest.raises(ConfigError, match="trained on log-mels .*'n_mels': 80"):
        loop.train(tiny_config(run_dir=str(tmp_path / "d"), init_from=str(tmp_path / "mel80.pt")))
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()  # refused before anything was written


def test_init_from_flag_sets_the_config():
    from hear_abt.train.__main__ import build_parser, resolve_config

    cfg, given = resolve_config(build_parser().parse_args(["--data", "x", "--init-from", "a.pt"]))
    assert cfg.init_from == "a.pt" and "init_from" in given


@pytest.mark.parametrize("disable", ["", "1"])
def test_tqdm_disable_silences_the_progress_bar(tiny_config, tmp_path, disable):
    """TQDM_DISABLE=1 keeps the bar out of a log file; the trainer must not override it.
    A subprocess, because tqdm reads TQDM_* once, when it is imported."""
    cfg = tiny_config(steps=2)
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    if disable:
        env["TQDM_DISABLE"] = disable
    r = subprocess.run([sys.executable, "-m", "hear_abt.train", "--config", str(cfg_file)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert ("train:" in r.stderr) == (not disable), r.stderr[-2000:]


# ---------------------------------------------------------------------- value by value
# hear_abt/train/loop.py function by function (written to kill mutmut's
LOGGER = "hear_abt.train.loop"


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(corpus, cache root, cache folder): the example clip cut into 8 files of ~0.46 s."""
    import soundfile as sf

    from hear_abt.frontend import MelConfig
    from hear_abt.train.cache_build import open_or_build_cache
    from hear_abt.train.data import list_audio

    base = tmp_path_factory.mktemp("clipcorpus")
    wav, sr = sf.read(EXAMPLE, dtype="float32")
    corpus = base / "corpus"
    corpus.mkdir()
    n = len(wav) // 8
    for i in range(8):
        sf.write(corpus / f"part{i}.wav", wav[i * n:(i + 1) * n], sr)
    root = base / "cache"
    cache = open_or_build_cache(list_audio(corpus), MelConfig(), root, workers=0)
    assert len(cache) == 8
    return corpus, root, cache.folder


@pytest.fixture
def make(clips, tmp_path):
    corpus, root, _ = clips

    def make(**overrides) -> TrainConfig:
        base = dict(data=str(corpus), run_dir=str(tmp_path / "run"), cache_dir=str(root), workers=0, batch_size=4,
                    crop_frames=16, projector=[64, 32], steps=4, mixup_bank=8, log_every=1, plot_every=0,
                    ckpt_every=0, device="cpu")
        base.update(overrides)
        return TrainConfig(**base)

    return make


@pytest.fixture(scope="module")
def done(clips, tmp_path_factory) -> Path:
    """A finished 2-step run (read-only for the tests that use it)."""
    corpus, root, _ = clips
    run = tmp_path_factory.mktemp("done") / "run"
    loop.train(TrainConfig(data=str(corpus), run_dir=str(run), cache_dir=str(root), workers=0, batch_size=4, crop_frames=16,
                           projector=[64, 32], steps=2, mixup_bank=8, plot_every=0, ckpt_every=0, device="cpu"))
    return run


class Clock:
    """loop's `time`, with a perf_counter whose n-th call returns 100 + 1 + 2 + ... + n:
    step k of a run takes k seconds."""

    def __init__(self):
        self.calls, self.t = 0, 100.0
        self.strftime = time.strftime

    def perf_counter(self) -> float:
        self.t += self.calls
        self.calls += 1
        return self.t


def rows(run_dir) -> list[dict]:
    with (Path(run_dir) / "log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def header(run_dir) -> list[str]:
    return (Path(run_dir) / "log.csv").read_text().splitlines()[0].split(",")


def nan_at(monkeypatch, calls: set[int]) -> None:
    """MelCache.crops returns NaN at these (0-based) calls: those steps' losses are NaN."""
    real, seen = MelCache.crops, []

    def crops(self, *a):
        out = real(self, *a)
        seen.append(1)
        return torch.full_like(out, float("nan")) if len(seen) - 1 in calls else out

    monkeypatch.setattr(MelCache, "crops", crops)


# ---------------------------------------------------------------- small helpers

def test_state_paths_has_state_and_run_id(tmp_path):
    assert loop.state_path(str(tmp_path)) == tmp_path / "state.pt"
    assert loop.state_paths(str(tmp_path)) == [tmp_path / "state.pt", tmp_path / "state.prev.pt"]
    assert not loop.has_state(tmp_path)
    (tmp_path / "state.prev.pt").write_bytes(b"x")
    assert loop.has_state(tmp_path)
    assert loop.read_run_id(tmp_path) is None
    (tmp_path / "run_id").write_text("  abc123\n")
    assert loop.read_run_id(str(tmp_path)) == "abc123"
    (tmp_path / "run_id").write_text(" \n")
    assert loop.read_run_id(tmp_path) is None


def test_total_steps():
    assert loop.total_steps(TrainConfig(steps=7, batch_size=4), 100) == 7
    assert loop.total_steps(TrainConfig(steps=0, epochs=2.5, batch_size=4), 10) == 5  # 2.5 x (10 // 4)
    assert loop.total_steps(TrainConfig(steps=0, epochs=1.0, batch_size=4), 15) == 3
    assert loop.total_steps(TrainConfig(steps=0, epochs=0.1, batch_size=4), 8) == 1  # at least one


def test_atomic_text_writes_exact_bytes_through_a_dot_tmp(tmp_path, monkeypatch):
    real, moves = os.replace, []
    monkeypatch.setattr(os, "replace", lambda a, b: (moves.append((Path(a), Path(b))), real(a, b)))
    loop._atomic_text(tmp_path / "x.txt", "a\r\nb é\n")
    assert (tmp_path / "x.txt").read_bytes() == "a\r\nb é\n".encode()
    assert moves == [(tmp_path / ".x.txt.tmp", tmp_path / "x.txt")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_clean_leftovers_removes_only_temporary_files(tmp_path):
    junk = ["..state.pt.new.abc.tmp", ".state.pt.new", ".state.prev.pt.link", ".encoder.pt.x1.tmp", ".log.csv.tmp", ".config.json.tmp"]
    keep = ["state.pt", "state.prev.pt", "log.csv", "config.json", "encoder.pt", ".other.tmp", "run_id"]
    for n in junk + keep:
        (tmp_path / n).write_text("x")
    loop._clean_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_complete_row():
    ok = {"step": "3", "loss": "1.0", "wall_s": "0.5"}
    assert loop._complete_row(ok)
    assert loop._complete_row({"step": "0", "wall_s": "", "probe_mean": "0.5"})
    assert not loop._complete_row({**ok, "wall_s": ""})  # cut short before its last column
    assert not loop._complete_row({"step": "3", "loss": "1.0"})
    assert not loop._complete_row({**ok, "step": ""}) and not loop._complete_row({**ok, "step": "x3"})
    assert not loop._complete_row({"step": None, "wall_s": "1"})
    assert not loop._complete_row({**ok, "wall_s": None})
    assert not loop._complete_row({**ok, None: ["extra"]})  # more fields than the header
    assert not loop._complete_row({"step": "0", "wall_s": "", "probe_mean": ""})


def test_amp_context():
    cpu = torch.device("cpu")
    bf16 = loop._amp_context(TrainConfig(amp="bf16"), cpu)
    assert isinstance(bf16, torch.autocast) and bf16.fast_dtype == torch.bfloat16 and bf16.device == "cpu"
    for amp in ("auto", "off"):
        assert not isinstance(loop._amp_context(TrainConfig(amp=amp), cpu), torch.autocast), amp
    with loop._amp_context(TrainConfig(amp="bf16"), cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_amp_context_auto_means_bf16_on_a_bf16_gpu_only(monkeypatch):
    """amp="auto" picks bf16 autocast on a CUDA device that supports it, and
    nothing elsewhere. No GPU here: torch.autocast("cuda") is built (and
    disabled, with a warning) all the same, which is enough to read its
    device and dtype."""
    import warnings

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ctx = loop._amp_context(TrainConfig(amp="auto"), cuda)
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16
    for amp, dev in (("off", cuda), ("auto", cpu)):
        assert not isinstance(loop._amp_context(TrainConfig(amp=amp), dev), torch.autocast), (amp, dev)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert not isinstance(loop._amp_context(TrainConfig(amp="auto"), cuda), torch.autocast)


def test_resolve_resume_config():
    saved = TrainConfig(steps=10, lambd=0.01, seed=3).to_dict()
    given = TrainConfig(steps=20, lambd=0.02, seed=4, log_every=5)
    cfg = loop.resolve_resume_config(saved, given, {"steps", "log_every"})
    assert (cfg.steps, cfg.log_every, cfg.lambd, cfg.seed) == (20, 5, 0.01, 3)
    assert loop.resolve_resume_config(saved, given, set()).to_dict() == saved
    same = TrainConfig(steps=10, lambd=0.01, seed=3)
    assert loop.resolve_resume_config(saved, same, {"lambd", "seed"}).to_dict() == saved  # unchanged values may be given
    msg = ("--resume: ['lambd', 'seed'] differ from the saved run's config; resuming must not change them "
           f"(start a new --run-dir instead). Changeable on resume: {sorted(loop.RESUMABLE_OVERRIDES)}")
    with pytest.raises(ConfigError) as e:
        loop.resolve_resume_config(saved, given, {"seed", "steps", "lambd"})
    assert str(e.value) == msg


# ---------------------------------------------------------------- state files

def test_load_state_errors_name_the_file(tmp_path):
    p = tmp_path / "s.pt"
    with pytest.raises(loop.StateError, match=f"^{re.escape(str(p))}: no such file$"):
        loop.load_state(p)
    p.write_bytes(b"hello")
    with pytest.raises(loop.StateError, match=re.escape(f"{p} is truncated or corrupt (not a complete torch.save archive, 5 bytes)")):
        loop.load_state(str(p))
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("junk.txt", "not a torch archive")
    with pytest.raises(loop.StateError, match=f"^{re.escape(str(p))} is corrupt and cannot be read: [A-Za-z]+Error: .+"):
        loop.load_state(p)
    for obj in ([1, 2], {"format": "other", "version": 1}):
        torch.save(obj, p)
        with pytest.raises(loop.StateError, match=f"^{re.escape(str(p))} is not a hear-abt training state$"):
            loop.load_state(p)
    torch.save({"format": loop.STATE_FORMAT, "version": 2}, p)
    with pytest.raises(loop.StateError, match=re.escape(f"{p}: training-state version 2 (this hear-abt reads 1)")):
        loop.load_state(p)


class _NotATensor:
    """A pickled object of this class is what weights_only=True refuses."""


def test_load_state_refuses_pickled_objects_and_quotes_the_error(tmp_path):
    p = tmp_path / "s.pt"
    torch.save({"format": loop.STATE_FORMAT, "version": loop.STATE_VERSION, "extra": _NotATensor()}, p)
    with pytest.raises(Exception) as direct:  # what torch itself says about this file
        torch.load(p, weights_only=True)
    last = str(direct.value).strip().splitlines()[-1]
    with pytest.raises(loop.StateError) as e:
        loop.load_state(p)
    assert str(e.value) == f"{p} is corrupt and cannot be read: {type(direct.value).__name__}: {last[:300]}"


@pytest.mark.parametrize("error, shown", [(EOFError(), ""), (RuntimeError("first line\n" + "x" * 400), "x" * 300),
                                          (ValueError("  \n "), "")])
def test_load_state_error_text_is_the_last_line_cut_to_300(tmp_path, monkeypatch, error, shown):
    p = tmp_path / "s.pt"
    torch.save({"format": loop.STATE_FORMAT}, p)

    def fail(*a, **k):
        raise error

    monkeypatch.setattr(torch, "load", fail)
    with pytest.raises(loop.StateError) as e:
        loop.load_state(p)
    assert str(e.value) == f"{p} is corrupt and cannot be read: {type(error).__name__}: {shown}"


def test_a_state_write_cut_before_its_rename_leaves_only_what_cleanup_removes(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    loop.write_state(fake_state(5, 1), run)
    real_replace = os.replace

    def killed_before_final_rename(src, dst):
        if Path(dst).name == "state.pt":
            raise OSError("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_before_final_rename)
    with pytest.raises(OSError, match="killed"):
        loop.write_state(fake_state(5, 2), run)
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(list(run.iterdir())) == 3  # state.pt, state.prev.pt and the complete new state beside them
    loop._clean_leftovers(run)
    assert sorted(q.name for q in run.iterdir()) == ["state.prev.pt", "state.pt"]
    assert [loop.load_state(q)["step"] for q in loop.state_paths(run)] == [1, 1]


def test_load_state_digest_and_run_id(tmp_path):
    p = tmp_path / "s.pt"
    st = fake_state(10, 3)
    torch.save(st, p)  # no digest (an older writer): accepted
    assert loop.load_state(p)["step"] == 3
    torch.save({**st, "digest": loop.content_digest(st)}, p)
    got = loop.load_state(p)
    assert "digest" not in got and torch.equal(got["model"]["w"], st["model"]["w"])
    torch.save({**st, "digest": loop.content_digest({**st, "step": 4})}, p)
    with pytest.raises(loop.StateError, match=re.escape(f"{p} is corrupt: its contents do not match the digest stored when it "
                                                        "was written (bytes changed on disk)")):
        loop.load_state(p)
    torch.save({**st, "run_id": "aaa"}, p)
    assert loop.load_state(p, "aaa")["run_id"] == "aaa" and loop.load_state(p)["run_id"] == "aaa"
    with pytest.raises(loop.StateError, match=re.escape(f"{p} belongs to another run (run id aaa; this run folder's run_id file says bbb)")):
        loop.load_state(p, "bbb")
    torch.save({**st, "run_id": None}, p)
    assert loop.load_state(p, "bbb")["step"] == 3  # a state without a run id is anybody's


def test_write_state_rotates_and_keeps_a_digest(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(train_state, "fsync_dir", synced.append)
    run = tmp_path / "run"
    run.mkdir()
    assert loop.write_state(fake_state(5, 1), run) == run / "state.pt"
    assert sorted(p.name for p in run.iterdir()) == ["state.pt"]
    (run / ".state.prev.pt.link").write_text("stale")  # left by a killed process
    loop.write_state(fake_state(5, 2), run)
    assert sorted(p.name for p in run.iterdir()) == ["state.prev.pt", "state.pt"]
    assert [loop.load_state(p)["step"] for p in loop.state_paths(run)] == [2, 1]
    raw = torch.load(run / "state.pt", weights_only=True)
    assert raw["digest"] == loop.content_digest(fake_state(5, 2))
    assert synced == [run, run]

    def no_links(*a):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    loop.write_state(fake_state(5, 3), run)  # the rename fallback
    assert [loop.load_state(p)["step"] for p in loop.state_paths(run)] == [3, 2]
    assert sorted(p.name for p in run.iterdir()) == ["state.prev.pt", "state.pt"]


def test_load_newest_state_falls_back_and_quarantines(tmp_path, capsys, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    run = tmp_path / "run"
    run.mkdir()
    assert loop.load_newest_state(run) is None
    loop.write_state(fake_state(5, 1), run)
    loop.write_state(fake_state(5, 2), run)
    cur, prev = loop.state_paths(run)
    cur.unlink()
    state, path = loop.load_newest_state(run)  # a missing state.pt is no error
    assert (state["step"], path) == (1, prev) and capsys.readouterr().err == "" and not caplog.records
    cur.write_bytes(b"junk")
    bad = f"{cur} is truncated or corrupt (not a complete torch.save archive, 4 bytes)"
    state, path = loop.load_newest_state(run)
    assert (state["step"], path) == (1, prev) and cur.exists()
    want = f"{bad}; resuming from {prev} (step 1) instead"
    assert capsys.readouterr().err == f"WARNING: {want}\n" and [r.getMessage() for r in caplog.records] == [want]
    caplog.clear()
    state, path = loop.load_newest_state(run, quarantine=True)
    assert path == prev and not cur.exists()
    (aside,) = run.glob("state.pt.bad-*")
    assert re.fullmatch(r"state\.pt\.bad-\d{8}T\d{6}", aside.name) and aside.read_bytes() == b"junk"
    assert capsys.readouterr().err == f"WARNING: {want}; moved the bad file to {aside}\n"
    assert [r.getMessage() for r in caplog.records] == [f"{want}; moved the bad file to {aside}"]


def test_load_newest_state_refuses_when_every_state_fails(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    loop.write_state({**fake_state(5, 1), "run_id": "other"}, run)
    (run / "state.pt").replace(run / "state.prev.pt")
    (run / "state.pt").write_bytes(b"abc")
    (run / "run_id").write_text("mine\n")
    cur, prev = loop.state_paths(run)
    with pytest.raises(TrainError) as e:
        loop.load_newest_state(run, quarantine=True)
    assert str(e.value) == (
        f"no usable training state in {run}:\n"
        f"  {cur} is truncated or corrupt (not a complete torch.save archive, 3 bytes)\n"
        f"  {prev} belongs to another run (run id other; this run folder's run_id file says mine)\n"
        "Move these files away to start the run again from step 0, or resume another copy.")
    assert cur.exists() and prev.exists()  # nothing moved when nothing is usable


# ---------------------------------------------------------------- export

def test_export_encoder_contents(done, tmp_path):
    state = loop.load_state(loop.state_path(done))
    cfg = TrainConfig.from_dict(state["config"])
    out = loop.export_encoder(state, str(tmp_path / "e.pt"))
    assert out == tmp_path / "e.pt"
    ck = torch.load(out, weights_only=True)
    enc = {k[len("encoder."):]: v for k, v in state["model"].items() if k.startswith("encoder.")}
    assert enc and ck["state_dict"].keys() == enc.keys()
    assert all(torch.equal(ck["state_dict"][k], v) and v.dtype == torch.float32 for k, v in enc.items() if v.is_floating_point())
    assert ck["encoder"] == {"name": "audiontt", "kwargs": {}} and ck["mel"] == cfg.mel
    assert ck["norm_stats"] == state["norm_stats"] and ck["train_config"] == state["config"] and ck["step"] == 2
    prov = ck["provenance"]
    assert {k: prov[k] for k in ("kind", "data", "n_clips", "norm_stats_source")} == {
        "kind": "abt-pretrained", "data": cfg.data, "n_clips": 8, "norm_stats_source": "the training log-mel cache"}
    half = torch.load(loop.export_encoder(state, tmp_path / "h.pt", half=True), weights_only=True)
    w = "features.0.weight"
    assert half["state_dict"][w].dtype == torch.float16 and torch.equal(half["state_dict"][w], enc[w].half())
    # the run's own export is this export
    assert torch.load(done / "encoder.pt", weights_only=True)["state_dict"].keys() == enc.keys()
    assert torch.equal(torch.load(done / "encoder.pt", weights_only=True)["state_dict"][w], enc[w])


# ---------------------------------------------------------------- the logger

class FakeWriter:
    made: list = []

    def __init__(self, log_dir, purge_step=None):
        self.log_dir, self.purge_step, self.scalars, self.closed = log_dir, purge_step, [], False
        FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed = True


@pytest.fixture
def fake_tensorboard(monkeypatch):
    FakeWriter.made = []
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    return FakeWriter.made


def test_logger_rows_history_and_tensorboard(tmp_path, fake_tensorboard):
    lg = loop._Logger(tmp_path, 0, ["probe_a", "probe_mean", "probe_s"])
    assert header(tmp_path) == loop.LOG_FIELDS + ["probe_a", "probe_mean", "probe_s"]
    (tb,) = fake_tensorboard
    assert (tb.log_dir, tb.purge_step) == (str(tmp_path / "tb"), 1)
    assert lg.probe_cols == ["probe_a", "probe_mean"] and lg.history == [] and lg.probe_history == []
    lg.row({"step": 0, "probe_a": 0.5, "probe_mean": 0.5, "probe_s": 1.5})
    lg.row({"step": 1, "loss": 2.5, "invariance": 1.0, "redundancy": 3.0, "lr_factor": 0.1, "samples_per_s": 8.0, "bad_steps": 0, "wall_s": 1.0})
    lg.row({"step": 2, "loss": float("nan"), "bad_steps": 1, "wall_s": 2.0})
    got = rows(tmp_path)
    assert got[0] == {**{k: "" for k in loop.LOG_FIELDS}, "step": "0", "probe_a": "0.5", "probe_mean": "0.5", "probe_s": "1.5"}
    assert got[1] == {"step": "1", "loss": "2.5", "invariance": "1.0", "redundancy": "3.0", "lr_factor": "0.1", "samples_per_s": "8.0",
                      "bad_steps": "0", "wall_s": "1.0", "probe_a": "", "probe_mean": "", "probe_s": ""}
    assert got[2]["loss"] == "nan" and got[2]["bad_steps"] == "1"
    assert lg.history == [(1, 2.5)]  # the NaN is not plotted
    assert lg.probe_history == [(0, {"probe_a": 0.5, "probe_mean": 0.5})]
    assert tb.scalars == [("probe/probe_a", 0.5, 0), ("probe/probe_mean", 0.5, 0),
                          ("train/loss", 2.5, 1), ("train/invariance", 1.0, 1), ("train/redundancy", 3.0, 1),
                          ("train/lr_factor", 0.1, 1), ("train/samples_per_s", 8.0, 1), ("train/loss", tb.scalars[-1][1], 2)]
    assert math.isnan(tb.scalars[-1][1])
    lg.close()
    assert tb.closed
    # resume from step 1: later rows and rows cut short are dropped, the rest read back
    with (tmp_path / "log.csv").open("a") as f:
        f.write("1,9.9\n3,1.5,1.0\n")  # a row cut short by a kill, and one after the resumed step
    again = loop._Logger(tmp_path, 1, ["probe_a", "probe_mean", "probe_s"])
    assert [r["step"] for r in rows(tmp_path)] == ["0", "1"] and again.history == [(1, 2.5)]
    assert again.probe_history == [(0, {"probe_a": 0.5, "probe_mean": 0.5})] and fake_tensorboard[-1].purge_step == 2
    plain = loop._Logger(tmp_path, 5)  # a resume without the probe: its columns are dropped
    assert header(tmp_path) == loop.LOG_FIELDS and [r["step"] for r in rows(tmp_path)] == ["0", "1"]
    assert plain.probe_cols == [] and plain.probe_history == [] and plain.history == [(1, 2.5)]


def test_logger_plots(tmp_path, monkeypatch, caplog):
    from matplotlib.backends import backend_agg

    class FakeCanvas(backend_agg.FigureCanvasAgg):
        """Records each figure the loop saves (matplotlib's own in-memory renders still run)."""
        made: list = []

        def print_png(self, path, *a, **k):
            if not isinstance(path, str):
                return super().print_png(path, *a, **k)
            FakeCanvas.made.append(types.SimpleNamespace(fig=self.figure, path=path))

    monkeypatch.setattr(backend_agg, "FigureCanvasAgg", FakeCanvas)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # no TensorBoard: no writer
    lg = loop._Logger(tmp_path, 0)
    assert lg.tb is None
    lg.plots(None, 0)  # nothing to draw yet
    assert FakeCanvas.made == [] and (tmp_path / "plots").is_dir()
    lg.history = [(1, 3.0), (2, 2.0)]
    c = torch.linspace(-0.5, 1, 200 * 200).view(200, 200)  # the colour scale is fixed, not fitted to the data
    import matplotlib

    with matplotlib.rc_context({"font.size": 7}):  # the title size is set, not taken from the style
        lg.plots(c, 2)
    loss, xc = FakeCanvas.made
    assert loss.path == str(tmp_path / "plots" / "loss.png") and xc.path == str(tmp_path / "plots" / "xcorr.png")
    assert tuple(loss.fig.get_size_inches()) == (6, 4) and len(loss.fig.axes) == 1
    ax = loss.fig.axes[0]
    assert ax.get_subplotspec().get_geometry() == (1, 1, 0, 0)  # one panel filling the figure
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("step", "Barlow Twins loss", "loss to step 2")
    assert ax.lines[0].get_xdata().tolist() == [1, 2] and ax.lines[0].get_ydata().tolist() == [3.0, 2.0]
    assert ax.get_xgridlines()[0].get_visible() and ax.get_xgridlines()[0].get_alpha() == 0.3
    assert tuple(xc.fig.get_size_inches()) == (5, 4.5) and len(xc.fig.axes) == 2  # the image and its colour bar
    ax = xc.fig.axes[0]
    (im,) = ax.images
    assert im.get_array().shape == (128, 128) and im.get_clim() == (-1, 1) and im.get_cmap().name == "RdBu_r"
    assert torch.equal(torch.as_tensor(im.get_array().data), c[:128, :128])
    assert ax.get_title() == "cross-correlation C[:128, :128], step 2" and ax.title.get_fontsize() == 10
    FakeCanvas.made = []
    lg.plots(torch.eye(4), 3)  # smaller than 128
    assert FakeCanvas.made[1].fig.axes[0].images[0].get_array().shape == (4, 4)
    assert FakeCanvas.made[1].fig.axes[0].get_title() == "cross-correlation C[:4, :4], step 3"
    # with the probe's history: loss and probe side by side
    FakeCanvas.made = []
    lg.probe_cols = ["probe_a", "probe_mean"]
    lg.probe_history = [(0, {"probe_a": 0.2, "probe_mean": 0.3}), (2, {"probe_a": 0.4, "probe_mean": 0.5})]
    lg.plots(None, 2)
    (fig,) = [m.fig for m in FakeCanvas.made]
    assert tuple(fig.get_size_inches()) == (11, 4) and len(fig.axes) == 2
    assert [a.get_subplotspec().get_geometry() for a in fig.axes] == [(1, 2, 0, 0), (1, 2, 1, 1)]  # side by side
    ax = fig.axes[1]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("step", "probe accuracy (test)", "online linear probe")
    assert [(ln.get_label(), ln.get_xdata().tolist(), ln.get_ydata().tolist(), ln.get_linewidth(), ln.get_marker()) for ln in ax.lines] == [
        ("a", [0, 2], [0.2, 0.4], 1, "."), ("mean", [0, 2], [0.3, 0.5], 2.5, ".")]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "mean"] and ax.get_legend().get_texts()[0].get_fontsize() == 8
    assert ax.get_xgridlines()[0].get_alpha() == 0.3
    FakeCanvas.made = []
    lg.history = []  # the probe alone still draws the figure
    lg.plots(None, 2)
    assert len(FakeCanvas.made) == 1 and FakeCanvas.made[0].fig.axes[0].get_title() == "loss to step 2"
    caplog.set_level(logging.WARNING, logger=LOGGER)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    shutil.rmtree(tmp_path / "plots")
    lg.plots(c, 4)
    assert not (tmp_path / "plots").exists()
    assert [r.getMessage() for r in caplog.records] == ["matplotlib is not installed: no plots (pip install matplotlib)"]


# ---------------------------------------------------------------- open_cache

def test_open_cache_from_a_built_folder_and_from_audio(make, clips, tmp_path, monkeypatch):
    corpus, root, folder = clips
    ctx = loop.D.setup("cpu")
    assert loop.open_cache(make(data=str(folder)), ctx).folder == folder  # a copied cache needs no audio
    with pytest.raises(DataError) as e:
        loop.open_cache(make(data=str(folder), mel={**make().mel, "n_mels": 32}), ctx)
    assert str(e.value) == f"{folder} was built with {MelCache.open(folder).mel}, the config asks for {make(mel={**make().mel, 'n_mels': 32}).mel_config}"
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "index.json").write_text("{")
    with pytest.raises(DataError, match=f"^--data {re.escape(str(broken))}: {re.escape(str(broken / 'index.json'))} is corrupt: "):
        loop.open_cache(make(data=str(broken)), ctx)
    assert loop.open_cache(make(), ctx).folder == folder  # audio + cache_dir
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HEAR_ABT_CACHE", str(tmp_path / "envcache"))
    built = loop.open_cache(make(cache_dir="~/c"), ctx)
    assert built.folder.parent == tmp_path / "home" / "c" and len(built) == 8 and built.folder.name == folder.name
    assert loop.open_cache(make(cache_dir=""), ctx).folder.parent == tmp_path / "envcache" / "mels"


# ---------------------------------------------------------------- train()

def test_run_logs_each_row_with_the_lr_schedule_and_timing(make, clips, monkeypatch, caplog, capfd):
    from hear_abt.train.optim import lr_factor

    caplog.set_level(logging.INFO, logger=LOGGER)
    monkeypatch.setattr(loop, "time", Clock())
    real_set_lr, factors = loop.set_lr, []

    def spy(opt, factor):
        factors.append(factor)
        real_set_lr(opt, factor)
        assert opt.param_groups[0]["lr"] == opt.param_groups[0]["base_lr"] * factor

    monkeypatch.setattr(loop, "set_lr", spy)
    cfg = make(steps=5, warmup_epochs=1.0, final_lr_factor=0.1, log_every=2, lambd=0.01, batch_size=3)
    s = loop.train(cfg)
    run = Path(cfg.run_dir)
    assert factors == [lr_factor(k, 5, 2, 0.1) for k in range(5)]  # warm-up: 1 epoch = 8 // 3 whole batches
    assert header(run) == loop.LOG_FIELDS
    got = rows(run)
    assert [int(r["step"]) for r in got] == [2, 4, 5]  # every log_every steps, and the last
    for r in got:
        k = int(r["step"])
        assert float(r["loss"]) == s["losses"][k - 1] and float(r["lr_factor"]) == factors[k - 1] and r["bad_steps"] == "0"
        assert float(r["wall_s"]) == k * (k + 1) / 2  # step k takes k fake seconds
        inv, red = float(r["invariance"]), float(r["redundancy"])
        assert inv > 0 and red > 0 and math.isclose(float(r["loss"]), inv + 0.01 * red, rel_tol=1e-4)
    # samples/s counts steps 3.. only (the first two are warm-up): 3 x 2 / (3 + 4), then 3 x 3 / 12
    assert got[0]["samples_per_s"] == "nan" and float(got[1]["samples_per_s"]) == 6 / 7 and float(got[2]["samples_per_s"]) == 0.75
    assert s["samples_per_s"] == 0.75 and s["step"] == 5 and len(s["losses"]) == 5 and s["bad_steps"] == 0
    assert s["exported"] == run / "encoder.pt" and s["run_dir"] == run and s["cache"] == clips[2]
    msgs = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert f"run {run}: 8 clips, 5 steps (2 per epoch, warm-up 2), 1 process(es) x 3, device cpu" in msgs
    assert msgs[-1] == f"exported the encoder to {run / 'encoder.pt'}"
    err = capfd.readouterr().err
    assert "train: 100%" in err and "5/5" in err and f"loss={s['losses'][-1]:.1f}, sps=1]" in err


def test_short_runs_time_every_step(make, monkeypatch):
    monkeypatch.setattr(loop, "time", Clock())
    s = loop.train(make(steps=2, log_every=1))
    got = rows(make().run_dir)
    assert float(got[0]["samples_per_s"]) == 4.0 and float(got[1]["samples_per_s"]) == 8 / 3 and s["samples_per_s"] == 8 / 3


def test_matches_a_hand_built_run(make, clips):
    """4 steps of the loop equal the documented pipeline built by hand from the
    same seeds: batch order, crops, normalisation, both views' augmentation,
    dropout seeding, lr schedule, LARS step and the bank fed the input batch.
    Non-default settings, so a setting the loop ignores shows."""
    from hear_abt.encoders import build_encoder
    from hear_abt.train.augment import ABTAugment, MixupBank, RandomLinearFader, RandomResizeCrop
    from hear_abt.train.barlow import BarlowTwinsLoss, BarlowTwinsModel
    from hear_abt.train.data import derive_seed, generator_for, global_batch
    from hear_abt.train.optim import build_optimizer, lr_factor, set_lr

    cfg = make(steps=4, seed=3, lambd=0.01, mixup_ratio=0.3, mixup_bank=4, rrc_virtual_crop=[1.2, 1.3],
               rrc_freq_scale=[0.7, 1.2], rrc_time_scale=[0.8, 1.4], fader_gain=0.5, warmup_epochs=0.5,
               final_lr_factor=0.2, encoder_kwargs={"dropout": 0.2}, lr_weights=0.3, crop_frames=24)
    s = loop.train(cfg)
    cache = MelCache.open(clips[2])
    mean, std = cache.norm_stats
    torch.manual_seed(derive_seed(3, "init"))
    model = BarlowTwinsModel(build_encoder("audiontt", dropout=0.2), [64, 32])
    opt = build_optimizer(model, cfg)
    aug = ABTAugment(MixupBank(0.3, 4), RandomResizeCrop([1.2, 1.3], [0.7, 1.2], [0.8, 1.4]), RandomLinearFader(0.5))
    loss_fn = BarlowTwinsLoss(0.01)
    losses = []
    for step in range(4):
        idx, u = global_batch(8, 4, step, 3)
        x = (cache.crops(idx, u, 24) - mean) / std
        g = generator_for(3, "augment", step)
        p1, p2 = aug.sample_params(4, g), aug.sample_params(4, g)
        with torch.no_grad():
            v1, v2 = aug.apply(x, p1), aug.apply(x, p2)
        set_lr(opt, lr_factor(step, 4, 1, 0.2))
        torch.manual_seed(derive_seed(3, "dropout", step, 0))
        loss, _ = loss_fn(*model(v1, v2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        aug.mixup.push(x)
        losses.append(float(loss.detach()))
    torch.testing.assert_close(torch.tensor(s["losses"]), torch.tensor(losses), rtol=1e-5, atol=0)
    state = loop.load_state(loop.state_path(cfg.run_dir))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(state["model"][k], v, rtol=1e-4, atol=1e-6, msg=k)
    assert state["mixup"]["capacity"] == 4 and state["mixup"]["count"] == 4
    torch.testing.assert_close(state["mixup"]["bank"], aug.mixup.bank)  # the last batch, normalised
    assert state["norm_stats"] == [mean, std] and state["n_clips"] == 8 and state["cache"] == str(clips[2])


def test_states_at_ckpt_every_stop_at_and_resume(make, monkeypatch):
    real, written = loop.write_state, []
    monkeypatch.setattr(loop, "write_state", lambda st, d: (written.append(st["step"]), real(st, d))[1])
    cfg = make(steps=5, ckpt_every=2)
    first = loop.train(cfg, stop_at=3)
    run = Path(cfg.run_dir)
    assert written == [2, 3] and first["step"] == 3 and first["exported"] is None and not (run / "encoder.pt").exists()
    assert len(first["losses"]) == 3
    state = loop.load_state(loop.state_path(run))
    assert {k: state[k] for k in ("format", "version", "step", "bad_steps_total", "bad_steps_run", "n_clips")} == {
        "format": loop.STATE_FORMAT, "version": loop.STATE_VERSION, "step": 3, "bad_steps_total": 0, "bad_steps_run": 0, "n_clips": 8}
    assert state["config"] == cfg.to_dict() and state["run_id"] == loop.read_run_id(run) and len(state["run_id"]) == 32
    assert (run / "run_id").read_text() == state["run_id"] + "\n"
    assert state["mixup"]["count"] == 8 and state["optimizer"]["state"]
    assert json.loads((run / "config.json").read_text()) == cfg.to_dict()
    assert (run / "config.json").read_text() == json.dumps(cfg.to_dict(), indent=1)
    with pytest.raises(TrainError) as e:
        loop.train(cfg)
    assert str(e.value) == f"{run} already holds a training state: pass --resume to continue it, or pick a new --run-dir"
    second = loop.train(cfg, resume=True)
    assert written == [2, 3, 4, 5] and second["step"] == 5 and len(second["losses"]) == 2 and second["exported"] == run / "encoder.pt"
    assert [r["step"] for r in rows(run)] == ["1", "2", "3", "4", "5"]
    assert loop.load_state(loop.state_path(run))["run_id"] == state["run_id"]
    again = loop.train(cfg, resume=True)  # nothing left to do: no new state, the export again
    assert written == [2, 3, 4, 5] and again["step"] == 5 and again["losses"] == [] and again["exported"] == run / "encoder.pt"
    longer = loop.train(make(steps=6, ckpt_every=2), resume=True, given_keys={"steps"})
    assert written == [2, 3, 4, 5, 6] and longer["step"] == 6 and len(longer["losses"]) == 1
    assert loop.load_state(loop.state_path(run))["config"]["steps"] == 6
    with pytest.raises(ConfigError, match=r"\['lambd'\] differ from the saved run's config"):
        loop.train(make(steps=6, lambd=0.5), resume=True, given_keys={"lambd"})


def test_run_folder_setup(make, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="hear_abt.train")  # the loop and the run-folder state
    cfg = make(steps=2)
    run = Path(cfg.run_dir)
    run.mkdir()
    (run / "run_id").write_text("given-id\n")
    for n in (".state.pt.new", ".log.csv.tmp", ".config.json.tmp"):
        (run / n).write_text("x")
    s = loop.train(cfg, resume=True)  # --resume on a folder without a state starts at step 0
    assert s["step"] == 2 and loop.load_state(loop.state_path(run))["run_id"] == "given-id"
    assert (run / "run_id").read_text() == "given-id\n"
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "encoder.pt", "log.csv", "run_id", "state.pt"]
    assert f"--resume: no state in {run} yet, starting from step 0" in [r.getMessage() for r in caplog.records]
    with pytest.raises(DataError) as e:
        loop.train(make(batch_size=16, run_dir=str(run.parent / "big")))
    assert str(e.value) == "only 8 usable clips for batch_size 16; add audio or lower batch_size"


def test_open_cache_under_torchrun_opens_each_copy_and_never_builds(make, clips, tmp_path, monkeypatch):
    from hear_abt.train import distributed as D

    gathered = []

    def gather(obj, ctx):  # both ranks report what this one saw
        gathered.append(obj)
        return [obj, dict(obj, rank=0)]

    monkeypatch.setattr(D, "all_gather_object", gather)
    rank1 = D.DistContext(1, 2, 1, torch.device("cpu"))
    cache = loop.open_cache(make(), rank1)  # the clips fixture built this cache already
    assert cache.folder == clips[2] and len(cache) == 8 and gathered[0]["copy"][:2] == [clips[2].name, 8]
    empty = tmp_path / "unbuilt"
    with pytest.raises(DataError, match=r"(?s)ranks 0, 1\): no log-mel cache at .*--prepare"):  # no process builds
        loop.open_cache(make(cache_dir=str(empty)), rank1)
    assert not empty.exists() or not any(empty.rglob("index.json"))


def test_run_folder_may_be_nested_in_new_folders(make, tmp_path):
    run = tmp_path / "new" / "deeper" / "run"
    assert loop.train(make(steps=1, run_dir=str(run)))["step"] == 1 and (run / "encoder.pt").is_file()


def test_resume_refuses_a_state_whose_model_keys_differ(make):
    """A state holding a tensor the model does not have (a hand-edited or
    foreign state with a valid digest) is refused, not half-loaded."""
    cfg = make(steps=3)
    loop.train(cfg, stop_at=1)
    path = loop.state_path(cfg.run_dir)
    state = loop.load_state(path)
    state["model"]["encoder.extra"] = torch.zeros(1)
    loop.write_state(state, cfg.run_dir)
    with pytest.raises(RuntimeError, match="Unexpected key.*encoder.extra"):
        loop.train(cfg, resume=True)


def test_resume_on_the_same_cache_is_silent(make, caplog):
    cfg = make(steps=3)
    loop.train(cfg, stop_at=1)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert loop.train(cfg, resume=True)["step"] == 3
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == []


def test_steps_from_epochs_when_steps_is_0(make):
    # 8 clips, batch 4: one epoch is 2 steps
    assert loop.train(make(steps=0, epochs=1))["step"] == 2


def test_batch_must_divide_over_the_processes(make, monkeypatch):
    from hear_abt.train import distributed as D

    monkeypatch.setattr(D, "setup", lambda device="auto": D.DistContext(0, 3, 0, torch.device("cpu")))
    monkeypatch.setattr(D, "barrier", lambda ctx: None)
    monkeypatch.setattr(D, "all_gather_object", lambda obj, ctx: [obj] * ctx.world_size)  # the cache check's exchange
    with pytest.raises(ConfigError, match="^batch_size 4 must divide evenly over 3 processes$"):
        loop.train(make(steps=2))


def test_resume_on_another_cache_warns(make, clips, tmp_path, caplog):
    cfg = make(steps=3)
    loop.train(cfg, stop_at=1)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    other = make(steps=3, cache_dir=str(tmp_path / "other"))
    s = loop.train(other, resume=True, given_keys={"cache_dir"})
    new = s["cache"]
    assert new.parent == tmp_path / "other" and s["step"] == 3
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        f"resuming on a different log-mel cache ({new}, was {clips[2]}): the file list or mel settings changed, "
        "so the data order will not replay the interrupted run"]


def test_non_finite_steps_are_skipped_counted_and_reset(make, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clean = make(steps=5, mixup_bank=64, run_dir=str(Path(make().run_dir).parent / "clean"))
    loop.train(clean, stop_at=1)
    nan_at(monkeypatch, {1, 3})
    cfg = make(steps=5, max_bad_steps=2, mixup_bank=64, ckpt_every=1)
    states = []
    real = loop.write_state

    def spy(st, d):  # a copy: the state's CPU tensors are the live weights
        states.append({**st, "model": {k: v.clone() for k, v in st["model"].items()}})
        return real(st, d)

    monkeypatch.setattr(loop, "write_state", spy)
    s = loop.train(cfg)  # two NaN steps, never two in a row: the run completes
    assert [math.isnan(v) for v in s["losses"]] == [False, True, False, True, False] and s["bad_steps"] == 2
    assert [r["bad_steps"] for r in rows(cfg.run_dir)] == ["0", "1", "1", "2", "2"]
    assert [(st["bad_steps_total"], st["bad_steps_run"]) for st in states] == [(0, 0), (1, 1), (1, 0), (2, 1), (2, 0)]
    assert [st["mixup"]["count"] for st in states] == [4, 4, 8, 8, 12]  # the bank takes good batches only
    good = loop.load_state(loop.state_path(clean.run_dir))["model"]
    for k, v in states[1]["model"].items():  # the NaN step left weights and BatchNorm statistics as they were
        assert torch.equal(v, good[k]), k
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        "step 1: non-finite loss nan, step skipped (1 in a row)", "step 3: non-finite loss nan, step skipped (1 in a row)"]


def test_non_finite_run_stops_and_says_what_is_kept(make, clips, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    cfg = make(steps=6, max_bad_steps=3)
    nan_at(monkeypatch, set(range(100)))
    with pytest.raises(loop.NonFiniteLossError) as e:
        loop.train(cfg)
    assert str(e.value) == ("3 non-finite losses in a row (last at step 2); stopping (no state had been saved yet). "
                            f"Lower lr_weights / lr_biases, check the data (a corrupt cache: delete {clips[2]}), or try --set amp=off.")
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        f"step {k}: non-finite loss nan, step skipped ({k + 1} in a row)" for k in range(3)]
    assert [r["bad_steps"] for r in rows(cfg.run_dir)] == ["1", "2"]  # the third bad step raised before its row
    monkeypatch.undo()
    other = make(steps=6, max_bad_steps=2, ckpt_every=2, run_dir=str(Path(cfg.run_dir).parent / "other"))
    loop.train(other, stop_at=2)
    nan_at(monkeypatch, set(range(100)))
    with pytest.raises(loop.NonFiniteLossError, match=re.escape(
            f"2 non-finite losses in a row (last at step 3); stopping (the last good state is {Path(other.run_dir) / 'state.pt'})")):
        loop.train(other, resume=True)


def test_probe_rows_at_start_every_n_and_end(make, monkeypatch):
    from hear_abt.train import probe as probe_mod

    made, calls = [], []

    class FakeProbe:
        columns = ["probe_x", "probe_mean"]

        def __init__(self, *args):
            made.append(args)

        def __call__(self):
            calls.append(1)
            v = len(calls) / 10
            return {"probe_x": v, "probe_mean": v, "probe_s": 0.5}

    monkeypatch.setattr(probe_mod, "OnlineProbe", FakeProbe)
    cfg = make(steps=5, log_every=10, probe_tasks=["t1", "t2"], probe_every=2)
    loop.train(cfg, stop_at=1)
    (args,) = made
    mean_std = MelCache.open(loop.load_state(loop.state_path(cfg.run_dir))["cache"]).norm_stats
    assert args[0] == ["t1", "t2"] and type(args[1]).__name__ == "AudioNTT" and args[2:] == ("audiontt", {}, cfg.mel_config, mean_std)
    assert header(cfg.run_dir) == loop.LOG_FIELDS + ["probe_x", "probe_mean", "probe_s"]
    loop.train(cfg, resume=True)  # the step-0 row is not probed again
    got = rows(cfg.run_dir)
    assert [(r["step"], r["probe_mean"], r["loss"] != "") for r in got] == [
        ("0", "0.1", False), ("2", "0.2", True), ("4", "0.3", True), ("5", "0.4", True)]
    made.clear()
    calls.clear()
    loop.train(make(steps=3, log_every=10, probe_tasks=["t1"], probe_every=0, run_dir=str(Path(cfg.run_dir).parent / "p0")))
    assert [r["step"] for r in rows(Path(cfg.run_dir).parent / "p0")] == ["0", "3"] and len(calls) == 2


def test_probe_time_is_not_training_time(make, monkeypatch):
    from hear_abt.train import probe as probe_mod

    clock = Clock()
    monkeypatch.setattr(loop, "time", clock)

    class FakeProbe:
        columns = ["probe_mean"]

        def __init__(self, *args):
            pass

        def __call__(self):
            clock.perf_counter()  # the probe takes time: the clock moves on
            return {"probe_mean": 0.5, "probe_s": 0.1}

    monkeypatch.setattr(probe_mod, "OnlineProbe", FakeProbe)
    loop.train(make(steps=3, log_every=1, probe_tasks=["t"], probe_every=1))
    # clock calls: start 100, probe +1, restart +2 -> 103, then step 1 +3, probe +4, restart +5,
    # step 2 +6, probe, restart, step 3 +9: only the steps' own time is timed
    got = rows(make().run_dir)
    assert [r["step"] for r in got] == ["0", "1", "2", "3"]
    assert float(got[3]["samples_per_s"]) == 4 / 9 and float(got[3]["wall_s"]) == 145 - 100


def test_plots_follow_plot_every(make, monkeypatch):
    steps = []
    monkeypatch.setattr(loop._Logger, "plots", lambda self, c, step: steps.append((step, tuple(c.shape))))
    loop.train(make(steps=5, plot_every=2))
    assert steps == [(2, (32, 32)), (4, (32, 32)), (5, (32, 32))]
    steps.clear()
    loop.train(make(steps=2, plot_every=1, run_dir=str(Path(make().run_dir).with_name("every1"))))
    assert steps == [(1, (32, 32)), (2, (32, 32))]


def test_wall_time_is_logged_in_milliseconds(make, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(loop, "time", clock)
    real = clock.perf_counter
    clock.perf_counter = lambda: real() + 0.0004 * clock.calls  # step k now takes k + 0.0004 s
    cfg = make(steps=3, log_every=1)
    loop.train(cfg)
    walls = [r["wall_s"] for r in rows(cfg.run_dir)]
    assert [float(w) for w in walls] == [round(float(w), 3) for w in walls] and any(not float(w).is_integer() for w in walls), walls


def test_progress_bar_counts_steps_from_where_a_resumed_run_starts(make, capfd):
    cfg = make(steps=3)
    loop.train(cfg, stop_at=1)
    capfd.readouterr()
    loop.train(cfg, resume=True)
    err = capfd.readouterr().err
    assert "1/3 [" in err and "3/3 [" in err and "2/3 [" in err and "0/3" not in err
    assert re.search(r"[0-9?]step/s|s/step", err), err  # the unit is "step"


def test_resume_sets_a_corrupt_state_aside(make, capfd):
    """train(resume=True) quarantines a state that fails its checks (so the next
    save cannot rotate it over the good one) and resumes from the previous state."""
    cfg = make(steps=3, ckpt_every=1)
    loop.train(cfg, stop_at=2)
    cur, prev = loop.state_paths(cfg.run_dir)
    cur.write_bytes(cur.read_bytes()[:100])
    s = loop.train(cfg, resume=True)
    assert s["step"] == 3 and len(s["losses"]) == 2  # steps 2 and 3 again, from the state of step 1
    (aside,) = Path(cfg.run_dir).glob("state.pt.bad-*")
    assert aside.stat().st_size == 100 and f"moved the bad file to {aside}" in capfd.readouterr().err
    assert [loop.load_state(p)["step"] for p in (cur, prev)] == [3, 2]


def test_resume_keeps_the_run_id_of_the_state(make):
    cfg = make(steps=2)
    loop.train(cfg, stop_at=1)
    run_id = loop.read_run_id(cfg.run_dir)
    (Path(cfg.run_dir) / "run_id").unlink()  # lost (copied without it): the state still knows
    loop.train(cfg, resume=True)
    assert loop.read_run_id(cfg.run_dir) == run_id == loop.load_state(loop.state_path(cfg.run_dir))["run_id"]


def test_a_failed_state_write_stops_and_says_what_survived(make, monkeypatch):
    import errno

    real, calls = loop.write_state, []

    def full_on(n):
        def write(st, d):
            calls.append(st["step"])
            if len(calls) == n:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(st, d)
        return write

    cfg = make(steps=4, ckpt_every=1)
    run = Path(cfg.run_dir)
    monkeypatch.setattr(loop, "write_state", full_on(1))
    with pytest.raises(TrainError) as e:
        loop.train(cfg)
    assert str(e.value) == (f"could not write the training state of step 1 in {run}: [Errno 28] No space left on device. "
                            "The earlier states are intact (none saved yet); free some space and continue with --resume.")
    shutil.rmtree(run)
    calls.clear()
    monkeypatch.setattr(loop, "write_state", full_on(3))
    with pytest.raises(TrainError) as e:
        loop.train(cfg)
    assert f"of step 3 in {run}: [Errno 28]" in str(e.value)
    assert f"The earlier states are intact ({run / 'state.pt'}, {run / 'state.prev.pt'}); free some" in str(e.value)
