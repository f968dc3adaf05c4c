"""The X-ARES adapter passes X-ARES's own encoder check and gives the HEAR path's frames."""
from __future__ import annotations

import pytest
import torch

from hear_abt import embed
from hear_abt.xares import ABTEncoder


def test_passes_xares_check_audio_encoder():
    checker = pytest.importorskip(
        "xares.audio_encoder_checker", reason="install.sh installs xares (--no-deps) and loguru"
    )
    enc = ABTEncoder()
    assert checker.check_audio_encoder(enc) is True
    assert (enc.sampling_rate, enc.output_dim, enc.hop_size_in_ms) == (16000, 3072, 40.0)


def test_frames_are_the_hear_paths_frame_features(rand_ckpt, model, example_wav):
    enc = ABTEncoder(str(rand_ckpt))
    x = torch.stack([example_wav, example_wav.flip(0)])
    out = enc(x)
    n_mel = len(example_wav) // 160 + 1
    assert out.shape == (2, n_mel // 4, 3072) and not out.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(out, embed.clip_frames(model, x), rtol=0, atol=0)
    # hop_size_in_ms is true to the output: T frames span the clip's duration.
    assert abs(out.shape[1] * enc.hop_size_in_ms - 1000 * len(example_wav) / 16000) < enc.hop_size_in_ms
