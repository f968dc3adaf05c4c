"""The loop: exact resume, export through load_model, NaN guard, config plumbing."""
import json
import shutil

import numpy as np
import pytest
import torch

import hear_abt
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
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["mu"], sb["mu"])
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
