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


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_embed_resamples_downmixes_and_skips_corrupt(rand_ckpt, example_wav, tmp_path, caplog):
    """A stereo 44.1 kHz file embeds close to the same audio as mono 16 kHz.

    The channels differ (the clip, and half of it reversed), so the reference
    is their mean. Tolerance: 16 -> 44.1 -> 16 kHz through torchaudio's
    windowed-sinc resampler leaves ~-56 dB of error, measured as a relative
    L2 distance of 0.025 (scene) and at most 0.03 (any timestamp), random or
    default weights. 0.06 is twice that, and well below what a wrong
    down-mix gives: the left channel only 0.21-0.36, the channel sum (+6 dB)
    0.09-0.19 (checked below, so the tolerance is known to bite).
    """
    import torch
    import torchaudio.functional as AF

    left, right = example_wav, 0.5 * example_wav.flip(0)
    mono = (0.5 * (left + right)).numpy()
    stereo44k = AF.resample(torch.stack([left, right]), 16000, 44100).T.numpy()
    sf.write(tmp_path / "stereo44k.wav", stereo44k, 44100, subtype="FLOAT")  # float: no 16-bit quantisation
    sf.write(tmp_path / "mono16k.wav", mono, 16000, subtype="FLOAT")
    sf.write(tmp_path / "channel_sum.wav", 2 * mono, 16000, subtype="FLOAT")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as e:
        main(["-v", "embed", str(tmp_path), "-o", str(out), "--model", str(rand_ckpt), "--timestamps"])
    assert e.value.code == 1  # one file could not be read
    text = caplog.text
    assert "down-mixed 2 channels" in text and "resampled 44100 Hz -> 16000 Hz" in text and "corrupt.wav" in text
    assert not (out / "corrupt.scene.npy").exists()
    s, m, wrong = (np.load(out / f"{n}.scene.npy") for n in ("stereo44k", "mono16k", "channel_sum"))
    assert s.shape == m.shape == (3072,)
    assert _rel(s, m) < 0.06 < _rel(wrong, m)
    ts_s, ts_m = np.load(out / "stereo44k.times_ms.npy"), np.load(out / "mono16k.times_ms.npy")
    np.testing.assert_array_equal(ts_s, ts_m)
    e_s, e_m = np.load(out / "stereo44k.timestamps.npy"), np.load(out / "mono16k.timestamps.npy")
    assert e_m.shape == (len(ts_m), 3072) and e_s.shape == e_m.shape
    assert max(_rel(a, b) for a, b in zip(e_s, e_m)) < 0.06


def test_embed_refuses_inputs_that_would_overwrite_each_other(rand_ckpt, example_wav, tmp_path, capsys):
    """Issue 18 bug 3: a.wav and a.flac (or x/a.wav) both wrote out/a.*.npy."""
    (tmp_path / "x").mkdir()
    for name in ("a.wav", "a.flac", "x/a.wav", "b.wav"):
        sf.write(tmp_path / name, example_wav[: 8000 * (1 + len(name))].numpy(), 16000)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["embed", str(tmp_path / "a.wav"), str(tmp_path / "a.flac"), str(tmp_path / "x"), "-o", str(out),
              "--model", str(rand_ckpt)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "overwrite" in err and "a.flac" in err and "x/a.wav" in err
    assert not out.exists() or not any(out.iterdir())  # refused before writing anything
    # The same file twice is embedded once; distinct names are all written.
    main(["embed", str(tmp_path / "a.wav"), str(tmp_path / "a.wav"), str(tmp_path / "b.wav"), "-o", str(out),
          "--model", str(rand_ckpt)])
    assert "embedded 2 of 2 files" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["a.scene.npy", "b.scene.npy"]


class _ClosedPipe:
    """stdout whose reader has gone (`hear-abt info x.pt | head -1`): every write raises EPIPE."""

    def __init__(self, fd: int):
        self._fd = fd

    def write(self, _text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self._fd


def test_info_into_a_closed_pipe_exits_1_without_a_traceback(rand_ckpt, tmp_path, monkeypatch):
    with open(tmp_path / "stdout", "w") as f:
        monkeypatch.setattr("sys.stdout", _ClosedPipe(f.fileno()))
        with pytest.raises(SystemExit) as e:  # not BrokenPipeError
            main(["info", str(rand_ckpt)])
    assert e.value.code == 1
