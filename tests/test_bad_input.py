"""Every input a user can get wrong: a correct result or an error naming the fix."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

import hear_abt
from hear_abt.checkpoint import CheckpointError, load_checkpoint

BOTH = [hear_abt.get_scene_embeddings, lambda a, m: hear_abt.get_timestamp_embeddings(a, m)[0]]


@pytest.mark.parametrize("fn", BOTH)
def test_1d_audio(model, example_wav, fn):
    with pytest.raises(ValueError, match=r"2-D.*unsqueeze\(0\)"):
        fn(example_wav, model)


@pytest.mark.parametrize("fn", BOTH)
def test_3d_audio(model, example_wav, fn):
    with pytest.raises(ValueError, match=r"2-D.*down-mix"):
        fn(example_wav[None, None], model)


@pytest.mark.parametrize("fn", BOTH)
def test_int16_audio(model, example_wav, fn):
    pcm = (example_wav * 32767).to(torch.int16)[None]
    with pytest.raises(TypeError, match=r"floating point.*32768"):
        fn(pcm, model)


def test_float64_audio_gives_the_float32_result(model, example_wav):
    x = example_wav[None, :24000]
    torch.testing.assert_close(
        hear_abt.get_scene_embeddings(x.double(), model), hear_abt.get_scene_embeddings(x, model)
    )


def test_numpy_audio(model, example_wav):
    with pytest.raises(TypeError, match="torch.from_numpy"):
        hear_abt.get_scene_embeddings(example_wav[None].numpy(), model)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("fn", BOTH)
def test_nan_inf(model, example_wav, bad, fn):
    x = torch.stack([example_wav, example_wav.clone()])
    x[1, 100] = bad
    with pytest.raises(ValueError, match=r"clips \[1\] contain NaN or Inf"):
        fn(x, model)


@pytest.mark.parametrize("fn", BOTH)
def test_zero_samples(model, fn):
    with pytest.raises(ValueError, match="0 samples"):
        fn(torch.zeros(2, 0), model)


def test_ten_samples(model, example_wav):
    """Shorter than one frame: padded with silence, one timestamp at 0 ms."""
    x = example_wav[None, 8000:8010]
    emb, ts = hear_abt.get_timestamp_embeddings(x, model)
    assert emb.shape == (1, 1, 3072) and ts.tolist() == [[0.0]]
    scene = hear_abt.get_scene_embeddings(x, model)
    assert scene.shape == (1, 3072) and torch.isfinite(scene).all()
    assert not torch.allclose(scene, hear_abt.get_scene_embeddings(torch.zeros(1, 10), model))


def test_slight_overshoot_warns_and_embeds(model, example_wav):
    x = example_wav[None] / example_wav.abs().max() * 1.2
    with pytest.warns(UserWarning, match="exceeds 1.0"):
        out = hear_abt.get_scene_embeddings(x, model)
    assert torch.isfinite(out).all()


def test_unscaled_pcm_values_are_rejected(model, example_wav):
    with pytest.raises(ValueError, match=r"\[-1, 1\].*32768"):
        hear_abt.get_scene_embeddings(example_wav[None] * 32767, model)


def test_audio_on_another_device(model, example_wav):
    x = torch.empty(1, 16000, device="meta")
    with pytest.raises(ValueError, match=r"audio is on meta but the model is on cpu.*audio.to\('cpu'\)"):
        hear_abt.get_scene_embeddings(x, model)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="hear-abt init"):
        hear_abt.load_model(str(tmp_path / "nope.pt"))


def test_truncated_checkpoint(rand_ckpt, tmp_path):
    cut = tmp_path / "cut.pt"
    data = rand_ckpt.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        hear_abt.load_model(str(cut))


def test_foreign_state_dict(tmp_path):
    from hear_abt.encoders import build_encoder

    p = tmp_path / "plain.pt"
    torch.save(build_encoder("audiontt").state_dict(), p)
    with pytest.raises(CheckpointError, match="plain state_dict"):
        hear_abt.load_model(str(p))


def test_checkpoint_with_wrong_weights(rand_ckpt, tmp_path):
    ck = torch.load(rand_ckpt, weights_only=True)
    ck["state_dict"].pop("fc.0.weight")
    p = tmp_path / "partial.pt"
    torch.save(ck, p)
    with pytest.raises(ValueError, match=r"(?s)weights do not fit.*fc.0.weight"):
        hear_abt.load_model(str(p))


def test_future_format_version(rand_ckpt, tmp_path):
    ck = torch.load(rand_ckpt, weights_only=True)
    ck["format_version"] = 99
    p = tmp_path / "future.pt"
    torch.save(ck, p)
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(p)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_code_running_pickle_is_not_run(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"format": "hear-abt", "payload": _Exploit(str(marker))}, p)
    with pytest.raises(CheckpointError, match="refused by the weights-only loader"):
        hear_abt.load_model(str(p))
    assert not marker.exists()
    # and the same payload as a raw pickle
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(CheckpointError):
        hear_abt.load_model(str(raw))
    assert not marker.exists()


def test_no_default_checkpoint_message(monkeypatch, tmp_path):
    import hear_abt.hear_api as api

    monkeypatch.setattr(api, "default_checkpoint_path", lambda: tmp_path / "default.pt")
    with pytest.raises(FileNotFoundError, match="never falls back to random weights"):
        hear_abt.load_model("")
