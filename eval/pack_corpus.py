"""Pack a subset of a pretraining corpus as Opus, to fit a size limit.

A lent GPU machine takes only 64 MiB of working tree (docs/gpu.md). Opus at
~20 kbit/s carries about 5 h of 16 kHz audio in 44 MiB, where the trainer's
fp16 log-mel cache would carry under 1 h. The subset is chosen by
water-filling over (origin, kind) groups of the corpus manifest: every group
gets the same number of seconds, or all it has if it has less, so small
sources (environment sounds, one language's prompts) are kept whole and the
big music packages do not crowd them out. Deterministic for a given seed.

    python eval/pack_corpus.py --corpus ~/.cache/hear-abt/corpus-v2-both --out gpu_corpus --mib 44

The GPU machine decodes it with soundfile (carry its wheel: docs/gpu.md).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from eval.minihear.audio import SR as SAMPLE_RATE  # noqa: E402  (the rate the corpus builder writes)
from eval.minihear.corpus import read_manifest  # noqa: E402

OPUS_LEVEL = 0.95  # libsndfile compression level: ~20 kbit/s on this corpus (docs/gpu.md)
EXPECTED_KBPS = 21.0  # used to size the subset before encoding; the size is then checked


def water_fill(available: dict[str, float], total: float) -> dict[str, float]:
    """Seconds per group: an equal share each, capped at what a group has."""
    if total >= sum(available.values()):
        return dict(available)
    lo, hi = 0.0, max(available.values())
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sum(min(v, mid) for v in available.values()) < total else (lo, mid)
    return {g: min(v, hi) for g, v in available.items()}


def choose(rows: list[dict], seconds: float, seed: int) -> list[dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[f"{r['origin']}/{r['kind']}"].append(r)
    quota = water_fill({g: sum(float(r["seconds"]) for r in rs) for g, rs in groups.items()}, seconds)
    chosen = []
    for g in sorted(groups):
        rs = sorted(groups[g], key=lambda r: r["file"])
        random.Random(f"{seed}:{g}").shuffle(rs)
        got = 0.0
        for r in rs:
            if got >= quota[g]:
                break
            chosen.append(r)
            got += float(r["seconds"])
    return sorted(chosen, key=lambda r: r["file"])


def encode(job: tuple[str, str]) -> int:
    import numpy as np
    import soundfile as sf

    src, dst = job
    x, sr = sf.read(src, dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        raise SystemExit(f"{src}: {sr} Hz; the corpus is {SAMPLE_RATE} Hz")
    sf.write(dst, np.ascontiguousarray(x.mean(1)), SAMPLE_RATE, format="OGG", subtype="OPUS", compression_level=OPUS_LEVEL)
    return os.path.getsize(dst)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True, help="a corpus folder built by eval/minihear/build.py --corpus (has manifest.csv)")
    ap.add_argument("--out", type=Path, required=True, help="output folder (created; must not exist)")
    ap.add_argument("--mib", type=float, default=44.0, help="size limit of the packed folder in MiB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    rows = read_manifest(args.corpus)
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; give a new folder")
    budget = args.mib * 2**20
    rows_out = choose(rows, 0.97 * budget * 8 / (EXPECTED_KBPS * 1000), args.seed)
    tmp = args.out.with_name(args.out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=False)
    jobs = [(str(args.corpus / r["file"]), str(tmp / (Path(r["file"]).stem + ".opus"))) for r in rows_out]
    with ProcessPoolExecutor(args.workers) as pool:
        sizes = list(pool.map(encode, jobs, chunksize=16))
    while sum(sizes) > budget - 64 * 1024:  # over the estimate: drop the last-listed clips until it fits
        os.remove(jobs.pop()[1])
        sizes.pop()
        rows_out.pop()
    hours = defaultdict(float)
    for r in rows_out:
        hours[r["kind"]] += float(r["seconds"]) / 3600
    with (tmp / "manifest.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "kind", "seconds", "origin"])
        for (_, dst), r in zip(jobs, rows_out):
            w.writerow([Path(dst).name, r["kind"], r["seconds"], r["origin"]])
    report = {"clips": len(rows_out), "hours": round(sum(hours.values()), 2), "hours_by_kind": {k: round(v, 2) for k, v in sorted(hours.items())},
              "mib": round(sum(sizes) / 2**20, 2), "kbps": round(sum(sizes) * 8 / (3600 * sum(hours.values())) / 1000, 1),
              "opus_level": OPUS_LEVEL, "seed": args.seed, "source_corpus": str(args.corpus)}
    (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    tmp.rename(args.out)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
