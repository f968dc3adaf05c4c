"""Start-up of the trainer's data structures at AudioSet's size, without audio.

Writes a CSV manifest of --rows fake clips (2,000,000 by default, AudioSet's
count) and the log-mel cache the trainer would find for it: its index, its
clip table of 10-second clips and a sparse mels.f16 (about 256 GB that take no
disk). Then, in a fresh process, does what a trainer's rank does before its
first step: list the manifest, key and open the cache, draw the first global
batch and read it through the loader. Prints the time to open and the peak
RSS of that process (VmHWM) (per rank: every rank does the same).

    python -m tools.sim_audioset                    # 2,000,000 rows in a scratch folder
    python -m tools.sim_audioset --dir /tmp/sim --keep   # reruns reuse the files
    python -m tools.sim_audioset --code-root OTHER_CHECKOUT   # the same, with another checkout's hear_abt
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import hear_abt
from hear_abt.frontend import MelConfig
from hear_abt.train.data import CACHE_VERSION, cache_key, list_audio

CLIP_FRAMES = 1001

# Runs in the fresh process: only hear_abt, so that --code-root can point at another checkout.
CHILD = r"""
import json, resource, sys, time


def peak_mb():
    # VmHWM: this process's own peak. ru_maxrss would also count the parent's RSS from before exec.
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


t0 = time.perf_counter()
import torch
from hear_abt.train import distributed as D, loop
from hear_abt.train.config import TrainConfig
from hear_abt.train.data import global_batch
imported = peak_mb()
t1 = time.perf_counter()
cfg = TrainConfig(data=sys.argv[1], cache_dir=sys.argv[2], device="cpu", batch_size=128)
cache = loop.open_cache(cfg, D.setup("cpu"))
t2 = time.perf_counter()
idx, u = global_batch(len(cache), cfg.batch_size, 0, cfg.seed)
try:
    from hear_abt.train.loader import CropLoader
    with CropLoader(cache, cfg.batch_size, cfg.crop_frames, cfg.seed, 0, cfg.batch_size, 0, 1, "cpu") as loader:
        x = loader.get(0)
except ImportError:
    x = cache.crops(idx, u, cfg.crop_frames)
t3 = time.perf_counter()
print(json.dumps({"clips": len(cache), "import_s": t1 - t0, "open_s": t2 - t1, "first_batch_s": t3 - t2,
                  "rss_after_import_mb": imported, "peak_rss_mb": peak_mb()}))
"""


def write_fake(folder: Path, rows: int) -> tuple[Path, Path]:
    """The manifest and the cache root holding its (sparse) cache; reused when there."""
    manifest, root = folder / "audioset.csv", folder / "cache"
    mel = MelConfig()
    done = folder / "complete.json"
    if done.is_file() and json.loads(done.read_text()).get("rows") == rows:
        return manifest, root
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with manifest.open("w", encoding="utf-8") as f:
        f.write("path,labels\n")
        for i in range(0, rows, 100_000):  # AudioSet-like names: YouTube id and start time
            f.write("".join(f"audio/{k // 10_000:03d}/Y{k:011d}_{k % 300:03d}.000.flac,/m/0{k % 527:04d}\n"
                            for k in range(i, min(rows, i + 100_000))))
    files = list_audio(manifest)
    key = cache_key(files, mel)
    cache = root / key
    cache.mkdir(parents=True)
    n = np.full(rows, CLIP_FRAMES, dtype=np.int64)
    np.save(cache / "clips.npy", np.stack([np.arange(rows, dtype=np.int64) * CLIP_FRAMES, n], axis=1))
    total = rows * CLIP_FRAMES
    with open(cache / "mels.f16", "wb") as f:
        f.truncate(total * mel.n_mels * 2)  # sparse: reads give zeros, no disk is used
    (cache / "files.txt").write_text("".join(p + "\n" for p in files), encoding="utf-8")
    (cache / "report.json").write_text(json.dumps({"listed": rows, "kept": rows, "skipped": 0, "skipped_files": []}))
    index = {"cache_version": CACHE_VERSION, "key": key, "mel": mel.to_dict(), "n_clips": rows, "total_frames": total,
             "norm_stats": [-5.0, 3.0], "listed": rows, "skipped": 0}
    (cache / "index.json").write_text(json.dumps(index, indent=1))
    done.write_text(json.dumps({"rows": rows}))
    return manifest, root


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--dir", help="where to write the manifest and cache (default: a scratch folder)")
    p.add_argument("--keep", action="store_true", help="keep them: a rerun with the same --dir reuses them")
    p.add_argument("--code-root", help="run the trainer's side with the hear_abt of this checkout")
    args = p.parse_args(argv)
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="sim_audioset-"))
    try:
        manifest, root = write_fake(folder, args.rows)
        code = Path(args.code_root).resolve() if args.code_root else Path(hear_abt.__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": str(code)}
        r = subprocess.run([sys.executable, "-c", CHILD, str(manifest), str(root)], capture_output=True, text=True,
                           env=env, cwd=folder)  # not the current folder: it may hold another hear_abt
        if r.returncode:
            raise RuntimeError(f"the simulated trainer failed:\n{r.stderr[-3000:]}")
        out = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"hear_abt from {code}: {out['clips']:,} clips: listing + opening the cache {out['open_s']:.1f} s, first batch {out['first_batch_s']:.2f} s; "
              f"peak RSS {out['peak_rss_mb']:.0f} MB ({out['rss_after_import_mb']:.0f} MB after the imports); "
              f"load average {os.getloadavg()[0]:.2f}")
        return out
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
