"""Log-mel cache build speed, and what it means for AudioSet.

Generates AudioSet-like clips (10 s, 44.1 or 48 kHz, stereo FLAC, seeded),
builds the trainer's cache of them with one decoding process and with one per
core, and prints clips/s for each. From the per-process rate it projects the
build time of AudioSet's ~2 M clips on a node with --cores cores (decoding
scales with processes until the disk or the page cache limits it, so the
projection is an upper bound on speed, not a promise).

    python -m tools.bench_build --clips 200 --cores 32
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from hear_abt.cores import usable_cores

AUDIOSET_CLIPS = 2_000_000


def make_clips(folder: Path, n: int, seed: int = 0) -> list[str]:
    """n ten-second stereo FLAC clips of tones in noise at 44.1 or 48 kHz."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        sr = int(rng.choice((44100, 48000)))
        t = np.arange(10 * sr) / sr
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(len(t))
        path = folder / f"clip{i:05d}.flac"
        sf.write(path, np.stack([x, 0.5 * x[::-1]], axis=1).astype(np.float32), sr, subtype="PCM_16")
        out.append(str(path))
    return out


def build_rate(files: list[str], workers: int, root: Path) -> float:
    """Clips per second of one cache build from nothing."""
    from hear_abt.frontend import MelConfig
    from hear_abt.train.cache_build import open_or_build_cache

    t = time.perf_counter()
    open_or_build_cache(files, MelConfig(), root, workers=workers)
    return len(files) / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=200, help="generated clips (default: %(default)s)")
    ap.add_argument("--cores", type=int, default=32, help="cores of the node to project AudioSet's build for")
    args = ap.parse_args(argv)
    if args.clips < 1 or args.cores < 1:
        ap.error("--clips and --cores must be >= 1")
    here = usable_cores()
    with tempfile.TemporaryDirectory(prefix="abt-bench-build-") as tmp:
        files = make_clips(Path(tmp) / "audio", args.clips)
        one = build_rate(files, 0, Path(tmp) / "one")  # 0: decoded in this process, like one worker
        every = build_rate(files, -1, Path(tmp) / "every")
    hours = AUDIOSET_CLIPS / (one * args.cores) / 3600
    print(f"{args.clips} clips of 10 s, 44.1/48 kHz stereo FLAC; {here} cores here; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"one decoding process:      {one:7.1f} clips/s")
    print(f"one per core ({here}):          {every:7.1f} clips/s ({every / one:.2f}x)")
    print(f"AudioSet ({AUDIOSET_CLIPS:,} clips) on {args.cores} cores at {one:.1f} clips/s each: "
          f"about {hours:.1f} h")


if __name__ == "__main__":
    main()
