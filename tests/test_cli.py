"""`hear-abt init | info | embed` on real files of any rate and channel count."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile as sf

from hear_abt.cli import main


def test_info(rand_ckpt, capsys):
    main(["info", str(rand_ckpt)])
    info = json.loads(capsys.readouterr().out)
    assert info["encoder"]["name"] == "audiontt" and info["provenance"]["kind"] == "random-weights"
    assert info["mel"]["n_fft"] == 1024


def test_info_on_a_foreign_file_exits_2(tmp_path, capsys):
    p = tmp_path / "x.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as e:
        main(["info", str(p)])
    assert e.value.code == 2 and "truncated or corrupt" in capsys.readouterr().err


def test_init_copies_stats_from_a_checkpoint(rand_ckpt, tmp_path):
    import torch

    out = tmp_path / "r2.pt"
    main(["init", "-o", str(out), "--seed", "3", "--stats-from", str(rand_ckpt)])
    a, b = (torch.load(p, weights_only=True) for p in (rand_ckpt, out))
    assert a["norm_stats"] == b["norm_stats"]
    assert not torch.equal(a["state_dict"]["fc.0.weight"], b["state_dict"]["fc.0.weight"])


def test_embed_resamples_downmixes_and_skips_corrupt(rand_ckpt, example_wav, tmp_path, caplog):
    stereo = np.stack([example_wav.numpy(), 0.5 * example_wav.numpy()], axis=1)
    import torch
    import torchaudio.functional as AF

    sf.write(tmp_path / "stereo44k.wav", AF.resample(torch.from_numpy(stereo.T.copy()), 16000, 44100).T.numpy(), 44100)
    sf.write(tmp_path / "mono16k.flac", example_wav.numpy(), 16000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as e:
        main(["-v", "embed", str(tmp_path), "-o", str(out), "--model", str(rand_ckpt), "--timestamps"])
    assert e.value.code == 1  # one file could not be read
    text = caplog.text
    assert "down-mixed 2 channels" in text and "resampled 44100 Hz -> 16000 Hz" in text and "corrupt.wav" in text
    s = np.load(out / "stereo44k.scene.npy")
    m = np.load(out / "mono16k.scene.npy")
    assert s.shape == m.shape == (3072,)
    ts = np.load(out / "mono16k.times_ms.npy")
    assert np.load(out / "mono16k.timestamps.npy").shape == (len(ts), 3072)
    assert not (out / "corrupt.scene.npy").exists()
