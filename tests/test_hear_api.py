"""The HEAR API contract on real audio."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hear_abt
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
