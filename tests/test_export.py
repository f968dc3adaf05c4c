"""`hear-abt export`: the ONNX and TorchScript graphs give the PyTorch path's
frame features and scene embeddings, at any batch and length."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hear_abt
from hear_abt import embed
from hear_abt.cli import main
from hear_abt.export import WaveformEncoder
from hear_abt.frontend import MelConfig
from hear_abt.model import ABTModel

# Largest difference, relative to the largest value, between an exported graph
# and the PyTorch path. Measured: 1.1e-5 on the example clip, 1.5e-6 on noise
# (float32 rounding: the graph's STFT is a DFT convolution, PyTorch's an FFT,
# and log() magnifies it in near-silent bins). The second test shows a wrong
# mel or a missing normalisation thousands of times above it.
TOL = 1e-4


@pytest.fixture(scope="module")
def default_model():
    return hear_abt.load_model()


def _clips(example_wav: torch.Tensor, seconds: int) -> torch.Tensor:
    """Two real clips of the given length: the example tiled, and it reversed at half level."""
    x = example_wav.repeat(seconds * 16000 // len(example_wav) + 1)[: seconds * 16000]
    return torch.stack([x, 0.5 * x.flip(0)])


def _reference(model, x):
    with torch.no_grad():
        frames = embed.clip_frames(model, x)
    return frames, embed.pool_clip(frames)


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_onnx_and_torchscript_match_pytorch(default_model, example_wav, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime", reason="pip install 'hear-abt[export]' (install.sh does)")
    main(["export", "--format", "onnx", "-o", str(tmp_path / "abt.onnx")])
    main(["export", "--format", "torchscript", "-o", str(tmp_path / "abt.pt")])
    assert "frames [batch, time, 3072] every 40 ms" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp_path / "abt.onnx"), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(str(tmp_path / "abt.pt"))
    for seconds in (1, 10, 60):
        x = _clips(example_wav, seconds)
        frames, scene = _reference(default_model, x)
        assert frames.shape == (2, seconds * 25, 3072)
        o_frames, o_scene = session.run(None, {"waveform": x.numpy()})
        with torch.no_grad():
            t_frames, t_scene = scripted(x)
        for got, want in ((o_frames, frames), (o_scene, scene), (t_frames, frames), (t_scene, scene)):
            assert got.shape == want.shape
            assert _rel(got, want) < TOL, seconds
    # Batch is dynamic too: one clip alone gives its row of the batch of two.
    one, _ = session.run(None, {"waveform": x[1:].numpy()})
    assert _rel(one[0], frames[1]) < TOL


def test_tolerance_catches_a_wrong_mel_or_a_missing_normalisation(default_model, example_wav):
    """Measured: the original wrapper's 400-sample window 0.72 and no
    normalisation 3.9 of the peak, against TOL = 1e-4."""
    x = _clips(example_wav, 10)
    frames, _ = _reference(default_model, x)
    with torch.no_grad():
        right = WaveformEncoder(default_model)(x)[0]
        raw = WaveformEncoder(default_model)
        raw.norm_mean, raw.norm_std = 0.0, 1.0
        unnormalised = raw(x)[0]
        short = ABTModel("audiontt", {}, MelConfig(win_length=400), (default_model.norm_mean, default_model.norm_std))
        short.encoder.load_state_dict(default_model.encoder.state_dict())
        wrong_window = WaveformEncoder(short)(x)[0]
    assert _rel(right, frames) < TOL
    assert _rel(unnormalised, frames) > 100 * TOL
    assert _rel(wrong_window, frames) > 100 * TOL
