"""hear_abt/frontend.py value by value (written to kill mutmut's mutants;
eval/mutation.py). The reference log-mel is built here from torch.stft and
torchaudio's filterbank function, independently of LogMel's code path."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from hear_abt.frontend import LogMel, MelConfig, measure_norm_stats


def test_defaults_are_the_papers():
    cfg = MelConfig()
    assert (cfg.sample_rate, cfg.n_fft, cfg.win_length, cfg.hop_length, cfg.n_mels) == (16000, 1024, 1024, 160, 64)
    assert (cfg.f_min, cfg.f_max) == (60.0, 7800.0) and cfg.eps == torch.finfo(torch.float32).eps
    assert cfg.hop_ms == 10.0 and MelConfig(hop_length=320, sample_rate=32000).hop_ms == 10.0
    assert MelConfig(hop_length=80).hop_ms == 5.0


def test_dict_round_trip_and_unknown_keys():
    cfg = MelConfig(n_mels=32, f_max=7000.0)
    assert MelConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["n_mels"] == 32
    with pytest.raises(ValueError, match="n_melz"):
        MelConfig.from_dict({**cfg.to_dict(), "n_melz": 3})


@pytest.mark.parametrize("n", [1, 159, 160, 161, 16000])
def test_frame_count(n):
    cfg = MelConfig()
    assert cfg.n_frames(n) == 1 + n // 160
    assert LogMel(cfg)(torch.zeros(2, n)).shape == (2, 64, cfg.n_frames(n))


def reference_logmel(wav: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    spec = torch.stft(torch.nn.functional.pad(wav, (cfg.n_fft // 2, cfg.n_fft // 2)), cfg.n_fft, cfg.hop_length,
                      cfg.win_length, torch.hann_window(cfg.win_length), center=False, return_complex=True)
    fb = AF.melscale_fbanks(cfg.n_fft // 2 + 1, cfg.f_min, cfg.f_max, cfg.n_mels, cfg.sample_rate)
    return torch.log(torch.einsum("bft,fm->bmt", spec.abs() ** 2, fb) + cfg.eps)


@pytest.mark.parametrize("cfg", [MelConfig(), MelConfig(n_fft=512, win_length=512, hop_length=128, n_mels=40,
                                                        f_min=100.0, f_max=6000.0, eps=1e-5),
                                 MelConfig(sample_rate=8000, n_fft=512, win_length=400, hop_length=80, n_mels=32,
                                           f_min=50.0, f_max=3800.0)])
def test_log_mel_equals_a_reference(cfg, example_wav):
    x = example_wav[None, :12345]
    out = LogMel(cfg)(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference_logmel(x, cfg), rtol=1e-4, atol=1e-4)
    # float64 input gives the float32 result; silence gives log(eps)
    torch.testing.assert_close(LogMel(cfg)(x.double()), out)
    assert torch.allclose(LogMel(cfg)(torch.zeros(1, 800)), torch.tensor(math.log(cfg.eps)))


def test_uncentred_call_takes_its_own_context(example_wav):
    lm, x = LogMel(), example_wav[None, :8000]
    full = lm(x)
    seg = torch.nn.functional.pad(x, (512, 512))[:, 160 * 3 : 160 * 9 + 1024]
    torch.testing.assert_close(lm(seg, center=False), full[:, :, 3:10])


def test_norm_stats_are_mean_and_std_of_every_value():
    rng = np.random.default_rng(0)
    parts = [rng.normal(2.0, 3.0, size=s) for s in [(1, 64, 10), (2, 64, 7), (1, 64, 1)]]
    mean, std = measure_norm_stats(torch.from_numpy(p).float() for p in parts)
    allv = np.concatenate([p.astype(np.float32).ravel() for p in parts]).astype(np.float64)
    assert mean == pytest.approx(allv.mean(), rel=1e-9) and std == pytest.approx(allv.std(), rel=1e-9)
    assert isinstance(mean, float) and isinstance(std, float)
    small = measure_norm_stats([torch.tensor([1.0, 2.0])])  # std 0.5: small, but not zero
    assert small == (1.5, 0.5)
    with pytest.raises(ValueError, match="^no log-mel values to measure normalisation statistics on$"):
        measure_norm_stats([])
    with pytest.raises(ValueError, match=r"^log-mel values have zero variance \(silent audio\?\); cannot normalise$"):
        measure_norm_stats([torch.full((1, 64, 5), -3.0)])
