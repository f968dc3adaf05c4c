"""Manifests, the log-mel cache (skips, reuse, invalidation), crops, data order."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hear_abt.errors import DataError
from hear_abt.frontend import LogMel, MelConfig
from hear_abt.train import data as D
from hear_abt.train.cache_build import open_or_build_cache

REPO = Path(__file__).resolve().parent.parent


def test_cache_skips_bad_files_and_reports_them(audio_corpus, mel_cache_root):
    files = D.list_audio(audio_corpus)
    assert any("/sub/" in f for f in files)  # recursive
    cache = open_or_build_cache(files, MelConfig(), mel_cache_root, build=False)  # reused, not rebuilt
    report = json.loads((cache.folder / "report.json").read_text())
    skipped = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in report["skipped_files"]}
    assert set(skipped) == {"corrupt.wav", "empty.wav", "silent.wav"}
    assert "silent" in skipped["silent.wav"]
    assert len(cache) == report["kept"] == len(files) - 3
    mean, std = cache.norm_stats
    assert std > 0 and math.isfinite(mean)
    assert cache.frames.shape == (cache.index["total_frames"], 64)


def test_cache_key_changes_with_mel_config_and_file_list(audio_corpus):
    files = D.list_audio(audio_corpus)
    k = D.cache_key(files, MelConfig())
    assert D.cache_key(files, MelConfig(f_max=8000.0)) != k
    assert D.cache_key(files[:-1], MelConfig()) != k
    assert D.cache_key(list(files), MelConfig()) == k


def test_csv_manifest_relative_paths(audio_corpus, tmp_path):
    csv = audio_corpus / "manifest.csv"
    csv.write_text("path,label\nspeech_and_bell.wav,x\nsub/bell.oga,y\n")
    try:
        files = D.list_audio(csv)
    finally:
        csv.unlink()
    assert [f.rsplit("/", 1)[-1] for f in files] == ["speech_and_bell.wav", "bell.oga"]
    with pytest.raises(DataError):
        D.list_audio(tmp_path)  # no audio


def test_crops_shape_and_padding(audio_corpus, mel_cache_root):
    cache = open_or_build_cache(D.list_audio(audio_corpus), MelConfig(), mel_cache_root, build=False)
    n = cache.clips[:, 1]
    short, long_ = int(np.argmin(n)), int(np.argmax(n))
    x = cache.crops(torch.tensor([short, long_]), torch.tensor([0.0, 0.5], dtype=torch.float64), 96)
    assert x.shape == (2, 1, 64, 96) and x.dtype == torch.float32
    assert n[short] < 96 and (x[0, 0, :, n[short]:] == cache.pad_value).all()
    off, m = cache.clips[long_]
    start = int(0.5 * (m - 96 + 1))
    assert torch.equal(x[1, 0], torch.from_numpy(cache.frames[off + start : off + start + 96].astype(np.float32)).T)


def test_chunked_log_mel_equals_whole(monkeypatch):
    wav = torch.randn(16000 * 3, generator=torch.Generator().manual_seed(0)) * 0.1
    lm = LogMel()
    monkeypatch.setattr(D, "CHUNK_SECONDS", 0.7)
    assert torch.allclose(D.log_mel_chunked(lm, wav), lm(wav[None])[0], atol=1e-4)


def test_data_order_is_a_function_of_seed_and_step():
    per_epoch = [D.global_batch(10, 3, s, seed=1)[0] for s in range(3)]
    assert len(set(torch.cat(per_epoch).tolist())) == 9  # one pass, no repeats, tail dropped
    a, b = D.global_batch(10, 3, 4, seed=1), D.global_batch(10, 3, 4, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(DataError):
        D.global_batch(2, 3, 0, seed=0)


def test_training_from_cache_never_imports_soundfile(tiny_config, tmp_path):
    cfg = tiny_config(steps=1)
    code = (
        "import sys; sys.modules['soundfile'] = None\n"
        "from hear_abt.train.__main__ import main\n"
        f"main(['--data', {cfg.data!r}, '--cache-dir', {cfg.cache_dir!r}, '--run-dir', {str(tmp_path / 'r')!r},"
        " '--steps', '1', '--batch-size', '4', '--set', 'crop_frames=16', '--set', 'projector=[32,16]', '--set', 'workers=0'])\n"
        "assert sys.modules['soundfile'] is None\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "r" / "encoder.pt").is_file()


def test_train_from_a_cache_folder_alone(tiny_config, mel_cache_root, tmp_path):
    from hear_abt.train import loop

    (folder,) = [p for p in mel_cache_root.iterdir() if p.is_dir()]
    s = loop.train(tiny_config(data=str(folder), cache_dir="/nonexistent", steps=1))
    assert s["step"] == 1 and s["cache"] == folder
    with pytest.raises(DataError, match="built with"):
        loop.train(tiny_config(data=str(folder), steps=1, mel={**MelConfig().to_dict(), "f_max": 8000.0}, run_dir=str(tmp_path / "x")))


# ---------------------------------------------------------------- damaged caches

@pytest.fixture
def cache_copy(mel_cache_root, tmp_path):
    """A private copy of the built cache root, and its one cache folder."""
    root = tmp_path / "cache"
    import shutil

    shutil.copytree(mel_cache_root, root)
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    return root, folder


def _damage(folder, how: str) -> str:
    if how == "short data file":
        data = (folder / "mels.f16").read_bytes()
        (folder / "mels.f16").write_bytes(data[: len(data) - 128])
        return "mels.f16 holds"
    if how == "key mismatch":
        index = json.loads((folder / "index.json").read_text())
        index["key"] = "0123456789abcdef"
        (folder / "index.json").write_text(json.dumps(index))
        return "has the key 0123456789abcdef"
    if how == "corrupt index":
        (folder / "index.json").write_text('{"cache_version": 1, "mel": ')
        return "index.json is corrupt"
    if how == "clip table":
        np.save(folder / "clips.npy", np.load(folder / "clips.npy")[:-1])
        return "clips.npy does not match"
    raise ValueError(how)


@pytest.mark.parametrize("how", ["short data file", "key mismatch", "corrupt index", "clip table"])
def test_damaged_cache_is_rebuilt_or_refused_by_name(audio_corpus, cache_copy, how, caplog):
    root, folder = cache_copy
    files = D.list_audio(audio_corpus)
    good = {n: (folder / n).read_bytes() for n in ("mels.f16", "clips.npy", "files.txt")}
    expect = _damage(folder, how)
    if how != "key mismatch":  # opening the folder itself (e.g. --data CACHE): a clear error naming the file
        with pytest.raises(D.CacheError, match=expect):
            D.MelCache.open(folder)
    with pytest.raises(D.CacheError, match=expect):  # a DDP rank that may not build
        open_or_build_cache(files, MelConfig(), root, build=False)
    with caplog.at_level("WARNING"):
        cache = open_or_build_cache(files, MelConfig(), root, workers=0)
    assert expect in caplog.text and "rebuilding" in caplog.text
    assert cache.folder == folder and len(cache) == len(files) - 3
    assert (folder / "files.txt").read_bytes() == good["files.txt"] and (folder / "clips.npy").read_bytes() == good["clips.npy"]
    assert (folder / "mels.f16").stat().st_size == len(good["mels.f16"])
    assert sorted(p.name for p in root.iterdir()) == [folder.name]  # the damaged copy is gone


def test_training_on_a_damaged_cache_folder_is_refused(tiny_config, cache_copy):
    from hear_abt.train import loop

    _, folder = cache_copy
    _damage(folder, "short data file")
    with pytest.raises(DataError, match=f"{folder / 'mels.f16'} holds .* its index says"):
        loop.train(tiny_config(data=str(folder), steps=1))
