"""Two-view samples/s of the training data path, from a cold and a warm cache.

Writes a generated log-mel cache of --gb gigabytes straight into the cache
format (no audio is decoded), then measures, in one run:

- the loader alone, before (the Python loop over the memmap that MelCache.crops
  was, copied below) and after (CropLoader: fp16 preads on a thread pool, the
  next steps read ahead), from a cold cache (the file evicted from the page
  cache with fsync + POSIX_FADV_DONTNEED before each measurement) and a warm
  one (the whole file read first);
- the trainer (a tiny AudioNTT on the CPU, a few steps) with the real data
  path from a cold cache, beside the same trainer fed one batch already in
  memory.

    python -m tools.bench_data                       # 2 GB in a scratch folder
    python -m tools.bench_data --cache-dir /tmp/bd --keep   # reruns reuse the cache
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hear_abt.frontend import MelConfig
from hear_abt.train import loop
from hear_abt.train.config import TrainConfig
from hear_abt.train.data import CACHE_VERSION, CacheError, MelCache, global_batch
from hear_abt.train.loader import PREFETCH, READ_THREADS, CropLoader

CLIP_FRAMES = 1001  # a 10-second clip (AudioSet's length) at the 10 ms hop


def old_crops(cache: MelCache, idx: torch.Tensor, u: torch.Tensor, n_frames: int) -> torch.Tensor:
    """The baseline: MelCache.crops as it was before the loader (one crop at a
    time, synchronously, through the memmap, converted to fp32 on the CPU)."""
    out = np.full((len(idx), n_frames, cache.mel.n_mels), cache.pad_value, dtype=np.float32)
    for k, (i, f) in enumerate(zip(idx.tolist(), u.tolist())):
        off, n = cache.clips[i]
        start = int(f * (abs(n - n_frames) + 1))
        if n >= n_frames:
            out[k] = cache.frames[off + start : off + start + n_frames]
        else:
            out[k, start : start + n] = cache.frames[off : off + n]
    return torch.from_numpy(out).transpose(1, 2).unsqueeze(1)


def write_cache(folder: Path, gb: float, seed: int = 0) -> MelCache:
    """A cache of about `gb` GB of generated log-mels, in the format
    build_cache writes: mostly 10 s clips, one in twenty shorter (some shorter
    than a crop, so padding is exercised). Reused when already there."""
    mel = MelConfig()
    try:
        cache = MelCache.open(folder)
        if abs(cache.frames.nbytes / 1e9 - gb) < 0.05 * gb:
            return cache
    except CacheError:
        pass
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    frame_bytes = mel.n_mels * 2
    n_clips = max(1, int(gb * 1e9 / (CLIP_FRAMES * frame_bytes)))
    n = np.full(n_clips, CLIP_FRAMES, dtype=np.int64)
    short = rng.random(n_clips) < 0.05
    n[short] = rng.integers(20, CLIP_FRAMES, short.sum())
    offsets = np.concatenate([[0], np.cumsum(n)[:-1]])
    total = int(n.sum())
    # 64 MiB of random log-mels, written over and over at shifting offsets: content differs per clip,
    # and writing 2 GB takes seconds, not the minutes that drawing every value would.
    block = (rng.standard_normal((1 << 25) // mel.n_mels * mel.n_mels, dtype=np.float32) * 3 - 5).astype(np.float16)
    with open(folder / "mels.f16", "wb") as f:
        left = total * mel.n_mels
        while left:
            shift = int(rng.integers(0, len(block) // 2)) // mel.n_mels * mel.n_mels
            part = block[shift : shift + min(left, len(block) - shift)]
            f.write(part.tobytes())
            left -= len(part)
    np.save(folder / "clips.npy", np.stack([offsets, n], axis=1))
    (folder / "files.txt").write_text("".join(f"/generated/{i:08d}.wav\n" for i in range(n_clips)), encoding="utf-8")
    (folder / "report.json").write_text(json.dumps({"listed": n_clips, "kept": n_clips, "skipped": 0, "skipped_files": []}))
    index = {"cache_version": CACHE_VERSION, "key": folder.name, "mel": mel.to_dict(), "n_clips": n_clips,
             "total_frames": total, "norm_stats": [-5.0, 3.0], "listed": n_clips, "skipped": 0}
    (folder / "index.json").write_text(json.dumps(index, indent=1))  # last: its presence marks a complete cache
    return MelCache.open(folder)


def evict(path: Path, cache: MelCache | None = None) -> str:
    """Drop the file from the page cache; returns what fincore says is left.
    Pages the cache's memmap has mapped are unmapped first (fadvise leaves
    mapped pages in place)."""
    mm = getattr(cache.frames, "_mmap", None) if cache is not None else None
    if mm is not None:
        mm.madvise(mmap.MADV_DONTNEED)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return resident(path)


def warm(path: Path) -> str:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass
    return resident(path)


def resident(path: Path) -> str:
    if not shutil.which("fincore"):
        return "?"
    r = subprocess.run(["fincore", "-nb", "-o", "RES", str(path)], capture_output=True, text=True)
    try:
        return f"{int(r.stdout.split()[0]) / path.stat().st_size:.0%}"
    except (ValueError, IndexError):
        return "?"


def rate_old(cache: MelCache, batch: int, frames: int, steps: range) -> float:
    t = time.perf_counter()
    for s in steps:
        idx, u = global_batch(len(cache), batch, s, 0)
        old_crops(cache, idx, u, frames)
    return batch * len(steps) / (time.perf_counter() - t)


def rate_new(cache: MelCache, batch: int, frames: int, steps: range, depth: int, threads: int) -> float:
    t = time.perf_counter()
    with CropLoader(cache, batch, frames, 0, 0, batch, steps.start, steps.stop, "cpu", depth, threads) as loader:
        for s in steps:
            loader.get(s)
    return batch * len(steps) / (time.perf_counter() - t)


class InMemory:
    """CropLoader's stand-in for the trainer: one batch, read once, handed every step."""

    def __init__(self, cache, batch_size, crop_frames, seed, lo, hi, start, stop, device="cpu", **_):
        idx, u = global_batch(len(cache), batch_size, 0, seed)
        self.x = cache.crops(idx[lo:hi], u[lo:hi], crop_frames).to(device)

    def get(self, step: int) -> torch.Tensor:
        return self.x

    def close(self) -> None:
        pass


def trainer_rate(folder: Path, tmp: Path, name: str, batch: int, steps: int) -> float:
    cfg = TrainConfig(data=str(folder), run_dir=str(tmp / name), encoder_kwargs={"channels": 16, "hidden": 128},
                           projector=[128, 64], batch_size=batch, steps=steps + 2, device="cpu", log_every=10**9,
                           plot_every=0, ckpt_every=0, mixup_bank=256)
    return loop.train(cfg)["samples_per_s"]


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=2.0, help="size of the generated cache (default 2)")
    p.add_argument("--cache-dir", help="where to write it (default: a scratch folder, deleted unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the generated cache; a rerun with the same --cache-dir reuses it")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--crop-frames", type=int, default=96)
    p.add_argument("--cold-steps", type=int, default=32, help="batches read per cold measurement (few: the baseline's read-ahead warms the file)")
    p.add_argument("--warm-steps", type=int, default=200)
    p.add_argument("--repeat", type=int, default=3, help="measurements of each kind (the median is printed)")
    p.add_argument("--depth", type=int, default=PREFETCH, help="steps the loader reads ahead")
    p.add_argument("--threads", type=int, default=READ_THREADS, help="the loader's read threads")
    p.add_argument("--trainer-steps", type=int, default=6, help="trainer steps timed (after 2 warm-up steps); 0 skips the trainer")
    args = p.parse_args(argv)
    root = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="bench_data-"))
    folder = root / f"generated-{args.gb:g}gb"
    out: dict[str, float] = {}
    try:
        t = time.perf_counter()
        cache = write_cache(folder, args.gb)
        print(f"cache {folder}: {len(cache)} clips, {cache.frames.nbytes / 1e9:.2f} GB (ready in {time.perf_counter() - t:.0f} s)")
        print(f"machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
              f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        print(f"loader: batch {args.batch_size}, crop {args.crop_frames} frames; new = CropLoader depth {args.depth}, "
              f"{args.threads} read threads")
        mels = folder / "mels.f16"
        b, f = args.batch_size, args.crop_frames
        # Each measurement is repeated, old and new alternating, on steps no earlier one read; the
        # median is printed (the machine may be shared: single runs varied by 3x under load).
        left, cold_old, cold_new = [], [], []
        for r in range(args.repeat):
            left.append(evict(mels, cache))
            cold_old.append(rate_old(cache, b, f, range(r * 1000, r * 1000 + args.cold_steps)))
            left.append(evict(mels, cache))
            cold_new.append(rate_new(cache, b, f, range(r * 1000 + 500, r * 1000 + 500 + args.cold_steps), args.depth, args.threads))
        out["cold_old"], out["cold_new"] = float(np.median(cold_old)), float(np.median(cold_new))
        print(f"cold (resident after each eviction: {', '.join(sorted(set(left)))}): before {out['cold_old']:9.0f}  after "
              f"{out['cold_new']:9.0f} two-view samples/s  ({out['cold_new'] / out['cold_old']:.1f}x; medians of {args.repeat} "
              f"x {args.cold_steps} batches; before {' '.join(f'{v:.0f}' for v in cold_old)}, after {' '.join(f'{v:.0f}' for v in cold_new)})")
        print(f"  after the cold reads the file is {resident(mels)} resident")
        print(f"warm (resident: {warm(mels)})", end="", flush=True)
        rate_old(cache, b, f, range(0, 3))  # first-call costs out of the timing
        warm_old, warm_new = [], []
        for r in range(args.repeat):
            steps = range(20_000 + r * args.warm_steps, 20_000 + (r + 1) * args.warm_steps)
            warm_old.append(rate_old(cache, b, f, steps))
            warm_new.append(rate_new(cache, b, f, steps, args.depth, args.threads))
        out["warm_old"], out["warm_new"] = float(np.median(warm_old)), float(np.median(warm_new))
        print(f": before {out['warm_old']:9.0f}  after {out['warm_new']:9.0f} two-view samples/s  "
              f"({out['warm_new'] / out['warm_old']:.1f}x; medians of {args.repeat} x {args.warm_steps} batches; before "
              f"{' '.join(f'{v:.0f}' for v in warm_old)}, after {' '.join(f'{v:.0f}' for v in warm_new)})")
        for step in range(0, 40, 7):  # the loader's batches are the baseline's, bit for bit
            idx, u = global_batch(len(cache), b, step, 0)
            with CropLoader(cache, b, f, 0, 0, b, step, step + 1, "cpu") as loader:
                assert torch.equal(loader.get(step), old_crops(cache, idx, u, f)), step
        if args.trainer_steps:
            with tempfile.TemporaryDirectory() as tmp:
                evict(mels, cache)
                out["trainer_real"] = trainer_rate(folder, Path(tmp), "real", b, args.trainer_steps)
                real = loop.CropLoader
                loop.CropLoader = InMemory
                try:
                    out["trainer_memory"] = trainer_rate(folder, Path(tmp), "memory", b, args.trainer_steps)
                finally:
                    loop.CropLoader = real
            print(f"trainer (AudioNTT channels 16, hidden 128, batch {b}, CPU {torch.get_num_threads()} threads, "
                  f"{args.trainer_steps} steps): real data path from a cold cache {out['trainer_real']:.0f}, "
                  f"one batch in memory {out['trainer_memory']:.0f} two-view samples/s "
                  f"({out['trainer_real'] / out['trainer_memory']:.0%})")
        print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    finally:
        if not args.keep:
            shutil.rmtree(folder if args.cache_dir else root, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
