"""The HEAR API contract on real audio.

Below: value-by-value tests written to kill mutation-testing survivors (tools/mutation.py).
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import reference_pooling

import hear_abt
import hear_abt.hear_api as api
from hear_abt import embed
from hear_abt.embed import frame_features


def test_attributes(model):
    assert model.sample_rate == 16000
    assert isinstance(model.scene_embedding_size, int) and model.scene_embedding_size == 3072
    assert isinstance(model.timestamp_embedding_size, int) and model.timestamp_embedding_size == 3072
    assert not model.training


def test_shapes_dtypes_and_timestamps(model, example_wav):
    audio = torch.stack([example_wav, example_wav.flip(0)])
    emb, ts = hear_abt.get_timestamp_embeddings(audio, model)
    n = audio.shape[1]
    assert emb.dtype == torch.float32 and ts.dtype == torch.float32
    assert emb.shape == (2, ts.shape[1], 3072) and ts.shape[0] == 2
    hop = np.diff(ts[0].numpy())
    assert np.allclose(hop, 40.0) and hop.max() <= 50.0
    assert ts[0, 0] == 0.0 and ts[0, -1] <= 1000 * n / 16000 < ts[0, -1] + 40.0
    scene = hear_abt.get_scene_embeddings(audio, model)
    assert scene.shape == (2, 3072) and scene.dtype == torch.float32
    assert torch.isfinite(emb).all() and torch.isfinite(scene).all()
    assert not torch.allclose(scene[0], scene[1])


def test_batch_mates_do_not_matter(model, example_wav):
    a = example_wav[:32000]
    noise = torch.rand(32000, generator=torch.Generator().manual_seed(1)) * 2 - 1
    alone = hear_abt.get_scene_embeddings(a[None], model)
    with_mates = hear_abt.get_scene_embeddings(torch.stack([noise, a, 0 * a]), model)
    torch.testing.assert_close(with_mates[1:2], alone, rtol=1e-5, atol=1e-5)
    t_alone, _ = hear_abt.get_timestamp_embeddings(a[None], model)
    t_mates, _ = hear_abt.get_timestamp_embeddings(torch.stack([noise, a]), model)
    torch.testing.assert_close(t_mates[1:2], t_alone, rtol=1e-5, atol=1e-5)


def test_train_mode_does_not_leak_into_embeddings(model, example_wav):
    x = example_wav[None, :20000]
    ref = hear_abt.get_scene_embeddings(x, model)
    model.train()
    try:
        again = hear_abt.get_scene_embeddings(x, model)
        assert model.training  # the caller's mode is restored
    finally:
        model.eval()
    torch.testing.assert_close(again, ref)


def test_timestamp_embedding_is_windowed_mean_plus_max(model, example_wav):
    """Each timestamp pools the 40 ms frames whose centres lie within +-480 ms."""
    x = example_wav[None]
    emb, ts = hear_abt.get_timestamp_embeddings(x, model)
    with torch.no_grad():
        frames = frame_features(model.frontend, model.encoder, model.norm_mean, model.norm_std, x, 10**9)[0]
    centres = 15.0 + 40.0 * torch.arange(frames.shape[0])
    for k in (0, 5, ts.shape[1] // 2, ts.shape[1] - 1):
        sel = frames[(centres >= ts[0, k] - 480) & (centres < ts[0, k] + 480)]
        torch.testing.assert_close(emb[0, k], sel.mean(0) + sel.amax(0), rtol=1e-4, atol=1e-5)


def test_scene_embedding_is_mean_plus_max_of_the_frames(rand_ckpt, model, example_wav):
    """The paper's clip pooling, value for value: the same frames, pooled the
    same way, give the same bits (one process, one thread setting); a chunked
    pass (1 s chunks) equals it to float32 rounding."""
    x = torch.stack([example_wav, 0.5 * example_wav.flip(0)])
    with torch.no_grad():
        frames = frame_features(model.frontend, model.encoder, model.norm_mean, model.norm_std, x, model.chunk_frames)
    scene = hear_abt.get_scene_embeddings(x, model)
    assert torch.equal(scene, frames.mean(dim=1) + frames.amax(dim=1))
    assert not torch.allclose(scene, frames.mean(dim=1), rtol=0.1) and not torch.allclose(scene, frames.amax(dim=1), rtol=0.1)
    chunked = hear_abt.load_model(str(rand_ckpt), chunk_seconds=1)
    torch.testing.assert_close(hear_abt.get_scene_embeddings(x, chunked), scene, rtol=1e-5, atol=1e-5)


def test_scene_pooling_option(rand_ckpt, model, example_wav):
    alt = hear_abt.load_model(str(rand_ckpt), scene_pooling="timestamps")
    x = example_wav[None]
    ts_emb, _ = hear_abt.get_timestamp_embeddings(x, alt)
    torch.testing.assert_close(hear_abt.get_scene_embeddings(x, alt), ts_emb.mean(1))
    assert not torch.allclose(hear_abt.get_scene_embeddings(x, model), ts_emb.mean(1))


def test_unknown_option_is_rejected(rand_ckpt):
    with pytest.raises(TypeError, match="unknown load_model option.*scene_poling"):
        hear_abt.load_model(str(rand_ckpt), scene_poling="clip")
    with pytest.raises(ValueError, match="scene_pooling"):
        hear_abt.load_model(str(rand_ckpt), scene_pooling="median")


@pytest.mark.parametrize("window", [0.0, -40.0, float("inf"), float("nan")])
def test_window_must_be_finite_and_positive(rand_ckpt, window):
    with pytest.raises(ValueError, match="timestamp_window_ms must be a finite number > 0"):
        hear_abt.load_model(str(rand_ckpt), timestamp_window_ms=window)


def test_long_clip_chunks_equal_one_pass(rand_ckpt, example_wav):
    """120 s, as the longest HEAR clips: chunked encoding equals a single pass."""
    x = example_wav.repeat(33)[: 120 * 16000][None]
    chunked = hear_abt.load_model(str(rand_ckpt), chunk_seconds=7)
    whole = hear_abt.load_model(str(rand_ckpt), chunk_seconds=1000)
    e1, t1 = hear_abt.get_timestamp_embeddings(x, chunked)
    e2, t2 = hear_abt.get_timestamp_embeddings(x, whole)
    assert e1.shape == (1, 3001, 3072) and t1[0, -1] == 120000.0
    torch.testing.assert_close(e1, e2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(t1, t2)


def test_deterministic(model, example_wav):
    x = example_wav[None, :16000]
    torch.testing.assert_close(hear_abt.get_scene_embeddings(x, model), hear_abt.get_scene_embeddings(x, model))


def test_empty_batch(model):
    emb, ts = hear_abt.get_timestamp_embeddings(torch.zeros(0, 16000), model)
    assert emb.shape == (0, 26, 3072) and ts.shape == (0, 26)
    assert hear_abt.get_scene_embeddings(torch.zeros(0, 16000), model).shape == (0, 3072)


# ---------------------------------------------------------------------- value by value
# hear_abt/hear_api.py value by value (written to kill mutmut's mutants;
ROOT = Path(__file__).resolve().parents[1]


def test_default_checkpoint_path_is_the_repositorys():
    assert api.default_checkpoint_path() == ROOT / "checkpoints" / "default.pt"


def test_load_model_passes_options_and_returns_eval_mode(rand_ckpt):
    m = hear_abt.load_model(str(rand_ckpt), timestamp_window_ms=200, chunk_seconds=3, scene_pooling="timestamps")
    assert not m.training and m.options.timestamp_window_ms == 200 and m.options.chunk_seconds == 3
    assert (m.window_before, m.window_after) == (2, 2) and m.chunk_frames == 75
    assert m.encoder_name == "audiontt" and m.mel_config.n_fft == 1024


def exact(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


def test_check_audio_messages(model, example_wav):
    x = example_wav[None, :4000]
    cases = [
        (x.numpy(), TypeError, "audio must be a torch.Tensor [n_sounds, n_samples], got ndarray; use torch.from_numpy(x).float()"),
        (x[0], ValueError, "audio must be 2-D [n_sounds, n_samples], got shape (4000,); add the batch axis: audio.unsqueeze(0)"),
        (x[None], ValueError, "audio must be 2-D [n_sounds, n_samples], got shape (1, 1, 4000); down-mix channels first, "
                              "e.g. audio.mean(dim=1) for [n, channels, samples]"),
        ((x * 100).short(), TypeError, "audio must be floating point in [-1, 1], got torch.int16; for 16-bit PCM use audio.float() / 32768"),
        (torch.zeros(3, 0), ValueError, "audio has 0 samples per clip; every clip needs at least one sample"),
        (torch.full((1, 100), 2.5), ValueError, "audio peak is 2.5, but HEAR audio is float in [-1, 1]; this looks like "
                                                "unscaled integer PCM (divide by 32768) or an un-normalised signal"),
    ]
    for audio, kind, msg in cases:
        with pytest.raises(kind, match=exact(msg)):
            hear_abt.get_scene_embeddings(audio, model)
    bad = torch.zeros(12, 100)
    bad[[0, 3, 11], 5] = float("nan")
    with pytest.raises(ValueError, match=exact("audio clips [0, 3, 11] contain NaN or Inf samples; clean or drop them")):
        hear_abt.get_timestamp_embeddings(bad, model)
    with pytest.raises(TypeError, match=exact("model must come from hear_abt.load_model(), got Linear")):
        hear_abt.get_timestamp_embeddings(x, torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match=exact("audio is on meta but the model is on cpu; move one of them: audio.to('cpu')")):
        hear_abt.get_scene_embeddings(torch.zeros(1, 10, device="meta"), model)


def test_only_the_first_ten_bad_clips_are_named(model):
    bad = torch.full((12, 50), float("inf"))
    with pytest.raises(ValueError, match=re.escape("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9] contain")):
        hear_abt.get_scene_embeddings(bad, model)


def test_peak_boundaries(model, example_wav):
    x = example_wav[None, :4000] / example_wav[:4000].abs().max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hear_abt.get_scene_embeddings(x, model)  # peak exactly 1: no warning
    with pytest.warns(UserWarning, match=exact("audio peak 2 exceeds 1.0; embedding it unchanged")):
        hear_abt.get_scene_embeddings(2 * x, model)  # exactly MAX_PEAK: embedded
    with pytest.raises(ValueError, match="audio peak is 2.01"):
        hear_abt.get_scene_embeddings(2.01 * x, model)


def test_empty_batches(model, rand_ckpt):
    emb, ts = hear_abt.get_timestamp_embeddings(torch.zeros(0, 4000), model)
    assert emb.shape == (0, 7, 3072) and ts.shape == (0, 7) and emb.dtype == ts.dtype == torch.float32
    assert hear_abt.get_scene_embeddings(torch.zeros(0, 4000), model).shape == (0, 3072)
    alt = hear_abt.load_model(str(rand_ckpt), scene_pooling="timestamps")
    assert hear_abt.get_scene_embeddings(torch.zeros(0, 4000), alt).shape == (0, 3072)


@pytest.mark.parametrize("n, count", [(1, 1), (639, 1), (640, 2), (1279, 2), (1280, 3), (16000, 26), (16001, 26)])
def test_timestamps_every_40ms_up_to_the_end(model, n, count):
    ts = embed.timestamps_ms(model, n, torch.device("cpu"))
    assert ts.dtype == torch.float32 and ts.tolist() == [40.0 * k for k in range(count)]


def test_timestamps_are_the_same_row_for_every_clip(model, example_wav):
    x = torch.stack([example_wav[:6000], example_wav[1000:7000], example_wav[2000:8000]])
    emb, ts = hear_abt.get_timestamp_embeddings(x, model)
    assert ts.shape == (3, 10) and ts.is_contiguous() and torch.equal(ts[0], ts[2])
    for i in range(3):  # and each clip's row is its own embedding
        torch.testing.assert_close(emb[i : i + 1], hear_abt.get_timestamp_embeddings(x[i : i + 1], model)[0], rtol=1e-5, atol=1e-5)


def test_short_clips_are_padded_to_one_frame(model, example_wav):
    assert embed.min_samples(model) == 480
    x = example_wav[None, 7000:7479]
    padded = torch.nn.functional.pad(x, (0, 1))
    torch.testing.assert_close(hear_abt.get_scene_embeddings(x, model), hear_abt.get_scene_embeddings(padded, model))
    y = example_wav[None, 7000:7480]  # exactly one frame: not padded
    assert embed.clip_frames(model, y).shape == (1, 1, 3072)
    assert embed.clip_frames(model, example_wav[None, :8000]).shape == (1, 12, 3072)


def test_eval_mode_restores_mode_and_disables_grad(model):
    model.train()
    try:
        with api._eval_mode(model):
            assert not model.training and not torch.is_grad_enabled()
        assert model.training and torch.is_grad_enabled()
    finally:
        model.eval()
    with pytest.raises(RuntimeError), api._eval_mode(model):
        raise RuntimeError
    assert not model.training


def test_scene_and_timestamps_do_not_track_gradients(model, example_wav):
    """Audio that tracks gradients (e.g. from a differentiable augmentation) is
    embedded without a warning, and the embeddings carry no graph."""
    x = example_wav[None, :4000].clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not hear_abt.get_scene_embeddings(x, model).requires_grad
        assert not hear_abt.get_timestamp_embeddings(x, model)[0].requires_grad


def test_default_checkpoint_path_prefers_the_installed_layout(tmp_path, monkeypatch):
    """An installed wheel has hear_abt/checkpoints/; a source checkout has
    checkpoints/ beside hear_abt/; with neither, the wheel's path is named."""
    pkg = tmp_path / "hear_abt"
    pkg.mkdir()
    monkeypatch.setattr(api, "__file__", str(pkg / "hear_api.py"))
    assert api.default_checkpoint_path() == pkg / "checkpoints" / "default.pt"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "default.pt").write_bytes(b"x")
    assert api.default_checkpoint_path() == tmp_path / "checkpoints" / "default.pt"
    (pkg / "checkpoints").mkdir()
    (pkg / "checkpoints" / "default.pt").write_bytes(b"x")
    assert api.default_checkpoint_path() == pkg / "checkpoints" / "default.pt"


def test_load_model_without_arguments_is_the_default():
    m = hear_abt.load_model()
    assert m.encoder_name == "audiontt" and not m.training and m.norm_mean != 0



@pytest.mark.parametrize("encoder, window", [("audiontt", 20.0), ("audiontt", 40.0), ("audiontt", 960.0), ("resnet18", 960.0)])
def test_timestamp_pooling_paths(encoder, window, example_wav, tmp_path):
    """The fast fixed-window path, the nearest-frame fallback (AudioNTT windows
    narrower than a frame, or past the last frame) and the coarse-frame path."""
    from hear_abt.cli import main

    path = tmp_path / f"{encoder}.pt"
    main(["init", "--encoder", encoder, "-o", str(path), "--seed", "1"])
    m = hear_abt.load_model(str(path), timestamp_window_ms=window)
    x = example_wav[None, :11000]  # 687.5 ms: the last timestamp (680) lies past the last AudioNTT frame
    emb, ts = hear_abt.get_timestamp_embeddings(x, m)
    frames = embed.clip_frames(m, x)[0].detach()
    centres = m.frame_offset_ms + m.frame_ms * torch.arange(frames.shape[0], dtype=torch.float64)
    torch.testing.assert_close(emb[0], reference_pooling(frames, centres, ts[0].double(), window), rtol=1e-4, atol=1e-5)


def test_scene_pooling_timestamps_is_the_mean_of_timestamp_embeddings(rand_ckpt, model, example_wav):
    x = example_wav[None, :12000]
    alt = hear_abt.load_model(str(rand_ckpt), scene_pooling="timestamps")
    mean_ts = hear_abt.get_timestamp_embeddings(x, alt)[0].mean(1)
    torch.testing.assert_close(hear_abt.get_scene_embeddings(x, alt), mean_ts)
    assert not torch.allclose(hear_abt.get_scene_embeddings(x, model), mean_ts, rtol=1e-2)


def test_no_default_checkpoint_exact_message(monkeypatch, tmp_path):
    monkeypatch.setattr(api, "default_checkpoint_path", lambda: tmp_path / "default.pt")
    with pytest.raises(FileNotFoundError, match=exact(
            "no default checkpoint is bundled with this hear-abt install, and load_model() never falls back to "
            "random weights. Pass a checkpoint: load_model('model.pt') (hear-validator hear_abt --model model.pt); "
            "make a random-weights one with `hear-abt init -o model.pt`, or train one with `python -m hear_abt.train`.")):
        hear_abt.load_model("")
