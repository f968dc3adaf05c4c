"""The loop: exact resume, export through load_model, NaN guard, config plumbing."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import hear_abt
from hear_abt.errors import ConfigError
from hear_abt.train import loop
from hear_abt.train.__main__ import main


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
