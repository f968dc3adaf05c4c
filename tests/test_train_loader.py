"""The read-ahead data path: crops by pread equal the old memmap loop bit for
bit, read-ahead changes nothing, and the loader's threads always end."""
import shutil
import threading

import numpy as np
import pytest
import torch

from hear_abt.frontend import MelConfig
from hear_abt.train import data as D
from hear_abt.train import loop
from hear_abt.train.cache_build import open_or_build_cache
from hear_abt.train.loader import CropLoader
from tools.bench_data import old_crops


@pytest.fixture
def cache(audio_corpus, mel_cache_root):
    return open_or_build_cache(D.list_audio(audio_corpus), MelConfig(), mel_cache_root, build=False)


def loader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("crop-")]


def bits(x: torch.Tensor) -> np.ndarray:
    return x.contiguous().numpy().view(np.uint32)


@pytest.mark.parametrize("n_frames", [16, 96, 400])
def test_crops_equal_the_old_loop_bit_for_bit(cache, n_frames):
    from concurrent.futures import ThreadPoolExecutor

    n = cache.clips[:, 1]
    assert (n < n_frames).any() or n_frames == 16  # short clips: padding is exercised
    with ThreadPoolExecutor(3) as pool:
        for step in range(12):
            idx, u = D.global_batch(len(cache), 8, step, seed=5)
            want = old_crops(cache, idx, u, n_frames)
            got = cache.crops(idx, u, n_frames)
            assert got.shape == want.shape and got.stride() == want.stride() and got.dtype == want.dtype
            assert (bits(got) == bits(want)).all(), step
            half = cache.crops(idx, u, n_frames, True, None, pool)
            assert half.dtype == torch.float16 and half.shape == (8, n_frames, 64)
            for padded in (None, cache.padded_rows(idx, n_frames)):
                assert (bits(D.expand_half(half, cache.pad_value, padded)) == bits(want)).all()


@pytest.mark.parametrize("depth,threads", [(0, 1), (1, 1), (4, 3)])
def test_read_ahead_gives_the_same_batches_in_the_same_order(cache, depth, threads):
    lo, hi = 2, 6  # a DDP rank's slice of the global batch
    with CropLoader(cache, 8, 24, 3, lo, hi, 5, 17, "cpu", depth, threads) as loader:
        for step in range(5, 17):
            idx, u = D.global_batch(len(cache), 8, step, 3)
            assert (bits(loader.get(step)) == bits(old_crops(cache, idx[lo:hi], u[lo:hi], 24))).all(), step
        with pytest.raises(ValueError, match="expected 17"):
            loader.get(17)
    assert not loader_threads()


def test_crops_is_called_once_per_step_in_step_order(cache, monkeypatch):
    """Tests that inject faults by wrapping crops count its calls as steps."""
    seen = []
    real = D.MelCache.crops

    def crops(self, idx, *a):
        seen.append(idx.tolist())
        return real(self, idx, *a)

    monkeypatch.setattr(D.MelCache, "crops", crops)
    with CropLoader(cache, 8, 16, 1, 0, 8, 3, 9, "cpu", depth=4) as loader:
        for step in range(3, 9):
            loader.get(step)
    assert seen == [D.global_batch(len(cache), 8, s, 1)[0].tolist() for s in range(3, 9)]


def test_a_read_error_reaches_the_trainer_and_the_threads_end(cache, monkeypatch):
    real, calls = D.MelCache.crops, []

    def crops(self, *a):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk gone")
        return real(self, *a)

    monkeypatch.setattr(D.MelCache, "crops", crops)
    with CropLoader(cache, 8, 16, 1, 0, 8, 0, 10, "cpu", depth=4) as loader:
        loader.get(0)
        loader.get(1)
        with pytest.raises(OSError, match="disk gone"):
            loader.get(2)
    assert not loader_threads()


def test_read_ahead_is_bounded_by_depth(cache, monkeypatch):
    """On the CPU buffers are freed at once, so the queue alone must stop the producer."""
    import time

    real, calls = D.MelCache.crops, []

    def crops(self, *a):
        calls.append(1)
        return real(self, *a)

    monkeypatch.setattr(D.MelCache, "crops", crops)
    with CropLoader(cache, 8, 16, 1, 0, 8, 0, 1000, "cpu", depth=2) as loader:
        loader.get(0)
        deadline = time.monotonic() + 60
        while len(calls) < 2 and time.monotonic() < deadline:  # the producer reads ahead (an event, not a delay)
            time.sleep(0.01)
        assert len(calls) >= 2
        time.sleep(0.5)  # room to overrun, if the producer could
        assert len(calls) <= 1 + 2 + 1  # taken, queued, and one waiting to be queued


def test_closing_early_ends_the_threads(cache):
    loader = CropLoader(cache, 8, 16, 1, 0, 8, 0, 1000, "cpu", depth=4, threads=4)
    loader.get(0)
    assert loader_threads()
    loader.close()
    assert not loader_threads()


def test_training_that_raises_leaves_no_loader_thread(tiny_config, monkeypatch):
    real, calls = D.MelCache.crops, []

    def crops(self, *a):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected at step 1")
        return real(self, *a)

    monkeypatch.setattr(D.MelCache, "crops", crops)
    with pytest.raises(RuntimeError, match="injected at step 1"):
        loop.train(tiny_config(steps=4, ckpt_every=0))
    assert not loader_threads()
    monkeypatch.undo()
    s = loop.train(tiny_config(steps=3, run_dir=str(tiny_config().run_dir) + "2"))
    assert s["step"] == 3 and not loader_threads()


def test_a_cache_cut_short_after_opening_is_named(cache, tmp_path):
    folder = tmp_path / "c"
    shutil.copytree(cache.folder, folder)
    c = D.MelCache.open(folder)
    last = torch.tensor([len(c) - 1])
    (folder / "mels.f16").write_bytes((folder / "mels.f16").read_bytes()[: int(c.clips[-1, 0]) * 128])
    with pytest.raises(D.CacheError, match="truncated"):
        c.crops(last, torch.tensor([0.0], dtype=torch.float64), 16)
    c.close()


@pytest.mark.slow
def test_audioset_sized_start_up(tmp_path):
    """2,000,000 manifest rows and clips, no audio: the trainer's structures open
    and serve a batch, within a memory bound (measured: 277 MB above the imports)."""
    from tools.sim_audioset import main

    out = main(["--dir", str(tmp_path / "sim")])
    assert out["clips"] == 2_000_000
    assert out["peak_rss_mb"] - out["rss_after_import_mb"] < 450


@pytest.mark.slow
def test_bench_data_runs_and_its_batches_are_the_baseline(tmp_path, capsys):
    from tools.bench_data import main

    out = main(["--gb", "0.03", "--cache-dir", str(tmp_path), "--cold-steps", "2", "--warm-steps", "3", "--repeat", "1",
                "--trainer-steps", "1"])
    assert set(out) == {"cold_old", "cold_new", "warm_old", "warm_new", "trainer_real", "trainer_memory"}
    assert all(v > 0 for v in out.values())
    text = capsys.readouterr().out
    assert "cold" in text and "warm" in text and "load average" in text
    assert not list(tmp_path.iterdir())  # no --keep: the generated cache is removed
