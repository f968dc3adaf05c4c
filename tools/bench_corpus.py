"""Corpus embedding speed: the one-file-at-a-time path beside `hear-abt embed`'s engine.

Generates a folder of short clips of mixed lengths, sample rates and channel
counts (seeded), then embeds it with both paths in one run, alternating them
over --rounds so that load from other processes hits both alike. The old path
is what `hear-abt embed` did per file: read_audio, get_scene_embeddings on a
batch of one, np.save. Prints files/s and x real time for each, and checks
that the outputs agree (exactly, or within float32 rounding for batched clips).

    python -m tools.bench_corpus --files 2000 --rounds 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from hear_abt.cores import usable_cores

LENGTHS_S = (0.5, 1.0, 1.0, 2.0, 4.0, 5.0, 5.0)  # draws: 1 s and 5 s (keyword and ESC-50 style) are common
RATES = (16000, 22050, 44100, 48000)


def make_corpus(folder: Path, n: int, seed: int = 0) -> float:
    """n clips (tones + noise, 16-bit WAV) in 10 sub-folders; returns their total seconds."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for i in range(n):
        sr, sec = int(rng.choice(RATES)), float(rng.choice(LENGTHS_S))
        t = np.arange(int(sr * sec)) / sr
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(len(t))
        if rng.random() < 0.3:
            x = np.stack([x, 0.5 * x[::-1]], axis=1)
        path = folder / f"g{i % 10}" / f"clip{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x.astype(np.float32), sr, subtype="PCM_16")
        total += sec
    return total


def old_path(model, jobs, out: Path) -> None:
    """One file at a time, as `hear-abt embed` did before the corpus engine."""
    from hear_abt import get_scene_embeddings
    from hear_abt.audio_io import read_audio

    for j in jobs:
        wav, _ = read_audio(j.src, model.sample_rate)
        dest = out / f"{j.key}.scene.npy"
        dest.parent.mkdir(parents=True, exist_ok=True)
        np.save(dest, get_scene_embeddings(wav.unsqueeze(0), model)[0].numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=1, help="alternate old/new this many times (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=usable_cores(), help="as hear-abt embed: the usable cores")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", default="", help="checkpoint (default: the bundled one)")
    args = ap.parse_args()

    import torch

    import hear_abt
    from hear_abt.embed_corpus import embed_corpus, list_jobs

    model = hear_abt.load_model(args.model)
    with tempfile.TemporaryDirectory(prefix="bench_corpus_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        audio_s = make_corpus(root / "in", args.files)
        print(f"corpus: {args.files} clips, {audio_s / 60:.1f} min of audio, made in {time.perf_counter() - t0:.0f} s; "
              f"{os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads")
        jobs, _ = list_jobs([root / "in"])
        times: dict[str, list[float]] = {"old": [], "new": []}
        for r in range(args.rounds):
            for name in ("old", "new"):
                out = root / f"{name}{r}"
                t0 = time.perf_counter()
                if name == "old":
                    old_path(model, jobs, out)
                else:
                    s = embed_corpus(model, jobs, out, workers=args.workers, batch_size=args.batch_size)
                    assert s.embedded == len(jobs), s.failures[:3]
                dt = time.perf_counter() - t0
                times[name].append(dt)
                print(f"round {r} {name}: {len(jobs) / dt:7.1f} files/s  {audio_s / dt:6.1f}x real time  ({dt:.1f} s)")
        worst, equal = 0.0, 0
        for j in jobs:
            a, b = (np.load(root / f"{n}0" / f"{j.key}.scene.npy") for n in ("old", "new"))
            equal += int(np.array_equal(a, b))
            worst = max(worst, float(np.abs(a - b).max() / np.abs(a).max()))
        old, new = statistics.median(times["old"]), statistics.median(times["new"])
        print(f"old path (one file at a time): {len(jobs) / old:.1f} files/s, {audio_s / old:.1f}x real time")
        print(f"new path (--workers {args.workers} --batch-size {args.batch_size}): {len(jobs) / new:.1f} files/s, "
              f"{audio_s / new:.1f}x real time")
        print(f"speed-up: {old / new:.2f}x files/s (median of {args.rounds} round(s))")
        print(f"outputs: {equal} of {len(jobs)} bit-equal, largest difference {worst:.1e} of the clip's peak value")
        if worst > 1e-5:
            raise SystemExit("outputs changed beyond float32 rounding")


if __name__ == "__main__":
    main()
