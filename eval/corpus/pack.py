"""Pack a subset of a pretraining corpus as Opus, to fit a size limit.

A lent GPU machine takes only 64 MiB of working tree (docs/dev/gpu_lease.md). Opus at
~12 kbit/s carries about 9 h of 16 kHz audio in 46 MiB, where the trainer's
fp16 log-mel cache would carry under 1 h. The subset is chosen by
water-filling over (origin, kind) groups of the corpus manifest: every group
gets the same number of seconds, or all it has if it has less, so small
sources (environment sounds, one language's prompts) are kept whole and the
big music packages do not crowd them out. Deterministic for a given seed.

    python -m eval.corpus.pack --corpus ~/.cache/hear-abt/corpus-v2-both --out gpu_corpus --mib 46.5

The GPU machine decodes it with soundfile (carry its wheel: docs/dev/gpu_lease.md).

With `--shards K` the whole corpus is packed instead, as K disjoint packs
OUT/pack-00 ... (one per call: tools/stage_corpus.py stages them); each must
fit --mib, and `--shards 0` picks the smallest K the pilot's bit rate allows.

    python eval/pack_corpus.py --corpus ~/.cache/hear-abt/corpus-v3 --out gpu_packs --mib 46.5 --shards 0
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import random
import shutil
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from eval.corpus.synthetic import read_manifest
from eval.minihear.audio import SR as SAMPLE_RATE  # the rate the corpus builder writes

# libsndfile's Opus compression level. On corpus v2 (40 clips, 2026-11-28): 0.95 ->
# 19.3 kbit/s, log-mels off by 0.09 std; 0.98 -> 11.4 kbit/s, 0.14 std; 0.99 ->
# 8.8 kbit/s, 0.53 std. 0.98 carries 1.7x the hours of 0.95 for little loss.
OPUS_LEVEL = 0.98
PILOT_CLIPS = 24  # clips encoded first to size the subset and measure the loss
REPORT_BYTES = 4096  # kept under --mib for report.json; the manifest is counted as it grows
TOP_UP_ROUNDS = 3  # the pilot's estimate is cautious: encode more while room is left
TOP_UP_MIN = 0.01  # ... and at least this share of the limit is free


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


def shard(rows: list[dict], k: int, seed: int) -> list[list[dict]]:
    """K disjoint parts that cover `rows`, each with about the same seconds of
    every (origin, kind) group: any one pack is a fair sample of the corpus."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[f"{r['origin']}/{r['kind']}"].append(r)
    parts: list[list[dict]] = [[] for _ in range(k)]
    total = [0.0] * k
    for g in sorted(groups):
        rs = sorted(groups[g], key=lambda r: r["file"])
        random.Random(f"{seed}:{g}").shuffle(rs)
        in_group = [0.0] * k
        for r in rs:
            i = min(range(k), key=lambda j: (in_group[j], total[j], j))
            parts[i].append(r)
            in_group[i] += float(r["seconds"])
            total[i] += float(r["seconds"])
    return [sorted(p, key=lambda r: r["file"]) for p in parts]


def manifest_text(rows: list[dict]) -> str:
    """The packed manifest, one place for its format: its size counts against --mib."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "kind", "seconds", "origin"])
    for r in rows:
        w.writerow([Path(r["file"]).stem + ".opus", r["kind"], r["seconds"], r["origin"]])
    return buf.getvalue()


def _mono(src: str):
    import numpy as np
    import soundfile as sf

    x, sr = sf.read(src, dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        raise SystemExit(f"{src}: {sr} Hz; the corpus is {SAMPLE_RATE} Hz")
    return np.ascontiguousarray(x.mean(1))


def write_opus(dst, x, level: float) -> None:
    """The one place for the codec settings: the pilot measures what encode writes."""
    import soundfile as sf

    sf.write(dst, x, SAMPLE_RATE, format="OGG", subtype="OPUS", compression_level=level)


def encode(job: tuple[str, str, float]) -> int:
    src, dst, level = job
    write_opus(dst, _mono(src), level)
    return os.path.getsize(dst)


def pilot(srcs: list[str], level: float) -> tuple[float, float]:
    """(kbit/s, mean |log-mel difference| in standard deviations of the clean
    log-mels) of these clips at this level: sizes the subset before the long
    encode, and says in the report what the codec costs."""
    import io

    import soundfile as sf
    import torch

    from hear_abt.frontend import LogMel

    lm, bits, seconds, clean, diffs = LogMel(), 0, 0.0, [], []
    for src in srcs:
        x = _mono(src)
        buf = io.BytesIO()
        write_opus(buf, x, level)
        bits, seconds = bits + 8 * buf.tell(), seconds + len(x) / SAMPLE_RATE
        buf.seek(0)
        y = sf.read(buf, dtype="float32")[0]
        n = min(len(x), len(y))
        a, b = (lm(torch.from_numpy(v[:n]).unsqueeze(0)) for v in (x, y))
        clean.append(a.flatten())
        diffs.append((a - b).abs().flatten())
    if seconds == 0:
        raise SystemExit("the corpus's pilot clips hold no audio to measure the codec on")
    return bits / seconds / 1000, float(torch.cat(diffs).mean() / torch.cat(clean).std())


def write_shards(args: argparse.Namespace, rows: list[dict], fit_seconds: float, kbps: float, loss: float,
                 limit: float) -> int:
    """Every clip in exactly one of K packs; each pack written whole (tmp + rename)
    or not at all, so a rerun after a kill encodes only the missing packs."""
    total = sum(float(r["seconds"]) for r in rows)
    k = args.shards or max(1, math.ceil(total / fit_seconds))
    if k < 0:
        raise SystemExit(f"--shards must be >= 0, got {k}")
    parts = shard(rows, k, args.seed)
    # names this set of packs: the corpus's clips and how they were split and encoded
    corpus_id = hashlib.sha256(json.dumps([sorted(r["file"] for r in rows), k, args.seed, args.level]).encode()).hexdigest()[:12]
    args.out.mkdir(parents=True, exist_ok=True)
    index_path = args.out / "shards.json"
    if index_path.exists() and json.loads(index_path.read_text())["corpus_id"] != corpus_id:
        raise SystemExit(f"{args.out} holds packs of another corpus or --shards; give a new folder")
    names = [f"pack-{i:02d}" for i in range(k)]
    index = {"corpus_id": corpus_id, "shards": k, "packs": names, "clips": len(rows), "hours": round(total / 3600, 3),
             "seed": args.seed, "source_corpus": str(args.corpus)}
    tmp_index = args.out / "shards.json.tmp"
    tmp_index.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp_index, index_path)
    with ProcessPoolExecutor(args.workers) as pool:
        for i, (name, part) in enumerate(zip(names, parts)):
            dest = args.out / name
            if dest.exists():
                continue
            tmp = args.out / (name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            jobs = [(str(args.corpus / r["file"]), str(tmp / (Path(r["file"]).stem + ".opus")), args.level) for r in part]
            size = sum(pool.map(encode, jobs, chunksize=16)) + len(manifest_text(part).encode())
            if size > limit:
                shutil.rmtree(tmp)
                need = math.ceil(k * size / limit)
                raise SystemExit(f"{name} is {size / 2**20:.1f} MiB, over --mib {args.mib:g}: use --shards {need} or more")
            hours = defaultdict(float)
            for r in part:
                hours[r["kind"]] += float(r["seconds"]) / 3600
            (tmp / "manifest.csv").write_bytes(manifest_text(part).encode())
            report = {"shard": i, "shards": k, "corpus_id": corpus_id, "clips": len(part),
                      "hours": round(sum(hours.values()), 3),
                      "hours_by_kind": {kk: round(v, 3) for kk, v in sorted(hours.items())},
                      "mib": round(size / 2**20, 2), "opus_level": args.level, "pilot_kbps": round(kbps, 1),
                      "logmel_mean_abs_diff_std": round(loss, 3), "seed": args.seed}
            (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
            tmp.rename(dest)
            print(json.dumps({"pack": name, **report}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True, help="a corpus folder built by python -m eval.corpus.build (has manifest.csv)")
    ap.add_argument("--out", type=Path, required=True, help="output folder (created; must not exist)")
    ap.add_argument("--mib", type=float, default=44.0, help="size limit of the packed folder in MiB")
    ap.add_argument("--level", type=float, default=OPUS_LEVEL, help="Opus compression level, 0-1 (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shards", type=int, default=None, metavar="K",
                    help="pack the whole corpus as K disjoint packs OUT/pack-00.. each within --mib (0: as few as fit)")
    args = ap.parse_args(argv)
    if not 0.0 <= args.level <= 1.0:
        raise SystemExit(f"--level must be between 0 and 1, got {args.level}")
    rows = read_manifest(args.corpus)
    if args.out.exists() and args.shards is None:
        raise SystemExit(f"{args.out} exists; give a new folder")
    budget = args.mib * 2**20
    if budget <= REPORT_BYTES + len(manifest_text([])):
        raise SystemExit(f"--mib {args.mib:g} leaves no room for audio: {REPORT_BYTES // 1024} KiB are kept for the report")
    sample = sorted(rows, key=lambda r: r["file"])
    random.Random(f"{args.seed}:pilot").shuffle(sample)
    kbps, loss = pilot([str(args.corpus / r["file"]) for r in sample[:PILOT_CLIPS]], args.level)
    limit = budget - REPORT_BYTES
    seconds = 0.97 * limit * 8 / (1.05 * kbps * 1000)  # the pilot's rate, with a margin
    if args.shards is not None:
        return write_shards(args, rows, seconds, kbps, loss, limit)

    def packed_bytes(added: list[tuple[dict, str, int]]) -> int:
        return sum(b for _, _, b in added) + len(manifest_text([r for r, _, _ in added]).encode())

    tmp = args.out.with_name(args.out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=False)
    added: list[tuple[dict, str, int]] = []  # (row, opus path, bytes) in the order encoded
    with ProcessPoolExecutor(args.workers) as pool:
        for _ in range(1 + TOP_UP_ROUNDS):
            done = {r["file"] for r, _, _ in added}
            new = [r for r in choose(rows, seconds, args.seed) if r["file"] not in done]
            if not new:
                break
            dsts = [str(tmp / (Path(r["file"]).stem + ".opus")) for r in new]
            sizes = pool.map(encode, [(str(args.corpus / r["file"]), d, args.level) for r, d in zip(new, dsts)], chunksize=16)
            added += zip(new, dsts, sizes)
            used, secs = packed_bytes(added), sum(float(r["seconds"]) for r, _, _ in added)
            if limit - used < TOP_UP_MIN * limit:
                break
            seconds = secs + 0.98 * (limit - used) * secs / used  # top up at the rate measured so far
    while added and packed_bytes(added) > limit:  # over the estimate: drop the latest-added clips until it fits
        os.remove(added.pop()[1])
    if not added:
        shutil.rmtree(tmp)
        raise SystemExit(f"not one clip fits in --mib {args.mib:g}")
    added.sort(key=lambda a: a[0]["file"])
    rows_out, sizes = [a[0] for a in added], [a[2] for a in added]
    hours = defaultdict(float)
    for r in rows_out:
        hours[r["kind"]] += float(r["seconds"]) / 3600
    (tmp / "manifest.csv").write_bytes(manifest_text(rows_out).encode())
    report = {"clips": len(rows_out), "hours": round(sum(hours.values()), 2), "hours_by_kind": {k: round(v, 2) for k, v in sorted(hours.items())},
              "mib": round(sum(sizes) / 2**20, 2), "kbps": round(sum(sizes) * 8 / (3600 * sum(hours.values())) / 1000, 1),
              "opus_level": args.level, "logmel_mean_abs_diff_std": round(loss, 3), "seed": args.seed, "source_corpus": str(args.corpus)}
    (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    tmp.rename(args.out)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
