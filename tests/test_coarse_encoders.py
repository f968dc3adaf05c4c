"""The paper's other encoders through the HEAR API, the trainer and the validator.

Their frames are coarser than HEAR's 50 ms limit (ResNet-18: 320 ms, ReGP-NRF:
160 ms, ViT-C: 80 ms), so timestamps come every 40 ms and each pools the frames
whose centres lie in its window (docs/design.md).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from helpers import reference_pooling

import hear_abt
from hear_abt.embed import frame_features, window_index

NEW = ["resnet18", "resnet18_regp_nrf", "vitc_base", "vitc_small", "vitc_tiny"]
QUICK = ["resnet18", "resnet18_regp_nrf", "vitc_tiny"]  # one of each geometry


@pytest.fixture(scope="session")
def coarse_ckpts(tmp_path_factory):
    """name -> path of a `hear-abt init --encoder name` checkpoint, made on demand."""
    from hear_abt.cli import main

    root, made = tmp_path_factory.mktemp("coarse"), {}

    def get(name: str) -> str:
        if name not in made:
            made[name] = str(root / f"{name}.pt")
            main(["init", "--encoder", name, "-o", made[name], "--seed", "0"])
        return made[name]

    return get


def one_pass_frames(model, x):
    with torch.no_grad():
        return frame_features(model.frontend, model.encoder, model.norm_mean, model.norm_std, x, 10**9)


@pytest.mark.parametrize("name", QUICK)
def test_timestamps_every_40ms_for_coarse_frames(name, coarse_ckpts, example_wav):
    model = hear_abt.load_model(coarse_ckpts(name))
    assert model.frame_ms > 50 and model.hop_ms == 40.0
    x = torch.stack([example_wav, example_wav.flip(0)])
    emb, ts = hear_abt.get_timestamp_embeddings(x, model)
    hop = np.diff(ts[0].numpy())
    assert np.allclose(hop, 40.0) and hop.max() <= 50.0
    assert ts[0, 0] == 0.0 and ts[0, -1] <= 1000 * x.shape[1] / 16000 < ts[0, -1] + 40.0
    assert emb.shape == (2, ts.shape[1], model.timestamp_embedding_size) and emb.dtype == torch.float32
    assert torch.isfinite(emb).all()
    scene = hear_abt.get_scene_embeddings(x, model)
    assert scene.shape == (2, model.scene_embedding_size) and not torch.allclose(scene[0], scene[1])


@pytest.mark.parametrize("window", [960.0, 100.0])
def test_windows_pool_the_frames_whose_centres_they_hold(window, coarse_ckpts, example_wav):
    """ResNet-18 (320 ms frames, centres 155 + 320 j ms): each timestamp pools
    the frames centred in [t - w/2, t + w/2), or the nearest frame when none is."""
    model = hear_abt.load_model(coarse_ckpts("resnet18"), timestamp_window_ms=window)
    x = example_wav[None]
    emb, ts = hear_abt.get_timestamp_embeddings(x, model)
    frames = one_pass_frames(model, x)[0]
    centres = model.frame_offset_ms + model.frame_ms * torch.arange(frames.shape[0])
    assert model.frame_offset_ms == 155.0
    for k in range(ts.shape[1]):
        t = float(ts[0, k])
        inside = (centres >= t - window / 2) & (centres < t + window / 2)
        sel = frames[inside] if inside.any() else frames[(centres - t).abs().argmin()][None]
        torch.testing.assert_close(emb[0, k], sel.mean(0) + sel.amax(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["audiontt", "resnet18", "vitc_tiny"])
@pytest.mark.parametrize("window", [1.0, 10.0, 30.0, 40.0, 50.0, 100.0, 960.0, 3700.0])
def test_any_window_from_1ms_to_the_clip_length(name, window, coarse_ckpts, example_wav):
    """Issue 18 bug 1: windows at or below 30 ms raised IndexError on AudioNTT,
    and at 40 ms its last timestamps (past the last frame) were NaN. Every
    window and clip length gives finite embeddings equal to brute-force pooling."""
    model = hear_abt.load_model(coarse_ckpts(name), timestamp_window_ms=window)
    for n in (10, 8000, 16000 + 37, 33333, len(example_wav)):  # 0.6 ms to 3.7 s
        x = example_wav[None, :n]
        emb, ts = hear_abt.get_timestamp_embeddings(x, model)
        assert torch.isfinite(emb).all(), (n, window)
        pad = max(0, (model.encoder.frame_stride - 1) * 160 - n)  # what the API does to short clips
        frames = one_pass_frames(model, torch.nn.functional.pad(x, (0, pad)))[0]
        centres = model.frame_offset_ms + model.frame_ms * torch.arange(frames.shape[0], dtype=torch.float64)
        ref = reference_pooling(frames, centres, ts[0].double(), window)
        torch.testing.assert_close(emb[0], ref, rtol=1e-4, atol=1e-5)


def test_window_index_edges():
    t = torch.tensor([0.0, 40.0, 3000.0])
    lo, hi = window_index(t, frame_ms=320.0, offset_ms=155.0, window_ms=960.0, n_frames=9)
    assert lo.tolist() == [0, 0, 8] and hi.tolist() == [2, 2, 9]  # clipped to the clip's 9 frames
    lo, hi = window_index(t, frame_ms=320.0, offset_ms=155.0, window_ms=10.0, n_frames=9)
    assert lo.tolist() == [0, 0, 8] and (hi - lo).tolist() == [1, 1, 1]  # nearest frame


@pytest.mark.parametrize("name", ["resnet18", "vitc_tiny"])
def test_batch_mates_do_not_matter(name, coarse_ckpts, example_wav):
    model = hear_abt.load_model(coarse_ckpts(name))
    a = example_wav[:40000]
    noise = torch.rand(40000, generator=torch.Generator().manual_seed(1)) * 2 - 1
    alone, _ = hear_abt.get_timestamp_embeddings(a[None], model)
    mates, _ = hear_abt.get_timestamp_embeddings(torch.stack([noise, a, 0 * a]), model)
    torch.testing.assert_close(mates[1:2], alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        hear_abt.get_scene_embeddings(torch.stack([a, noise]), model)[:1],
        hear_abt.get_scene_embeddings(a[None], model), rtol=1e-5, atol=1e-5,
    )


@pytest.mark.parametrize("name, seconds, chunk", [("resnet18", 60, 5), ("resnet18_regp_nrf", 30, 3), ("vitc_tiny", 20, 2)])
def test_chunked_equals_one_pass(name, seconds, chunk, coarse_ckpts, example_wav):
    """Many chunk boundaries: CNN chunks carry chunk_context, ViT-C chunks sit on its 96-frame grid."""
    x = example_wav.repeat(seconds // 3 + 1)[: seconds * 16000 + 1234][None]
    chunked = hear_abt.load_model(coarse_ckpts(name), chunk_seconds=chunk)
    whole = hear_abt.load_model(coarse_ckpts(name), chunk_seconds=1000)
    torch.testing.assert_close(one_pass_frames(chunked, x), one_pass_frames(whole, x), rtol=1e-5, atol=1e-5)
    e1, _ = hear_abt.get_timestamp_embeddings(x, chunked)
    e2, _ = hear_abt.get_timestamp_embeddings(x, whole)
    torch.testing.assert_close(e1, e2, rtol=1e-5, atol=1e-5)


def test_vitc_embeds_a_120s_clip(coarse_ckpts, example_wav):
    """Longer than its 96-frame pretraining input: 96-frame segments, one pass
    each, so attention never spans the clip (cost linear in its length). Its
    speed is a benchmark figure, not a test: `python -m tools.bench_embed
    --encoder vitc_tiny --quick` (README's encoder table)."""
    model = hear_abt.load_model(coarse_ckpts("vitc_tiny"))
    x = example_wav.repeat(33)[: 120 * 16000][None]
    emb, ts = hear_abt.get_timestamp_embeddings(x, model)
    assert emb.shape == (1, 3001, 192) and ts[0, -1] == 120000.0 and torch.isfinite(emb).all()
    assert np.allclose(np.diff(ts[0].numpy()), 40.0)
    # Segments are independent: new audio in the first second (mel frames < 104,
    # segments 0-1, output frames < 24) leaves every later frame as it was.
    y = x.clone()
    y[:, :16000] = torch.rand(16000, generator=torch.Generator().manual_seed(0)) - 0.5
    fx, fy = one_pass_frames(model, x[:, : 10 * 16000]), one_pass_frames(model, y[:, : 10 * 16000])
    assert (fx[:, :24] - fy[:, :24]).abs().amax() > 0.1
    torch.testing.assert_close(fx[:, 24:], fy[:, 24:], rtol=1e-5, atol=1e-5)


def test_shortest_clip(coarse_ckpts, example_wav):
    model = hear_abt.load_model(coarse_ckpts("resnet18"))
    emb, ts = hear_abt.get_timestamp_embeddings(example_wav[None, 8000:8010], model)
    assert emb.shape == (1, 1, 512) and ts.tolist() == [[0.0]] and torch.isfinite(emb).all()


@pytest.mark.parametrize("name", NEW)
def test_trains_exports_and_embeds(name, tiny_config, tmp_path):
    """`python -m hear_abt.train --encoder NAME` for two steps; AdamW for ViT-C."""
    from hear_abt.train.__main__ import main
    from hear_abt.train.config import TrainConfig

    cfg = tiny_config(steps=2, crop_frames=32)
    conf = tmp_path / "tiny.json"
    conf.write_text(json.dumps({k: v for k, v in cfg.to_dict().items() if k != "encoder"}))
    summary = main(["--config", str(conf), "--encoder", name])
    saved = TrainConfig.from_dict(torch.load(summary["exported"], weights_only=True)["train_config"])
    assert saved.encoder == name and saved.resolved_optimizer == ("adamw" if name.startswith("vitc") else "lars")
    assert summary["step"] == 2 and all(np.isfinite(summary["losses"]))
    model = hear_abt.load_model(str(summary["exported"]))
    emb = hear_abt.get_scene_embeddings(torch.zeros(2, 16000).uniform_(-0.1, 0.1), model)
    assert emb.shape == (2, model.scene_embedding_size) and torch.isfinite(emb).all()


@pytest.mark.slow
def test_hear_validator_passes_on_every_new_encoder(coarse_ckpts):
    exe = shutil.which("hear-validator")
    assert exe, "hear-validator is not installed: run `bash install.sh`"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    for name in NEW:
        run = subprocess.run(
            [exe, "hear_abt", "--model", coarse_ckpts(name), "--device", "cpu"],
            capture_output=True, text=True, env=env, timeout=900,
        )
        out = run.stdout + run.stderr
        assert run.returncode == 0, f"{name}: {out[-3000:]}"
        assert "Checking get_scene_embeddings" in out and "ModelError" not in out, name
        assert "Max interval between timestamps is 40.0ms" in out, name
