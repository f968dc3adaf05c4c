"""Draw a pretraining manifest from a built corpus: every synthetic clip plus a
seeded, equal number of clips from each real-audio origin.

    python -m eval.corpus.subset --corpus corpus-v2-both/ --per-origin 130 --seed 0 --out ft/manifest.csv

Equal counts per origin keep one large package (hours of game music) from
dominating a short run. This is how the default checkpoint's second stage drew
its 4,220 clips (docs/experiments/retraining.md); the same corpus, count and seed give the
same manifest.
"""
from __future__ import annotations

import argparse
import csv
import random
from collections import defaultdict
from pathlib import Path

from eval.corpus.synthetic import read_manifest

SYNTHETIC = "synthetic"


def draw(rows: list[dict], per_origin: int, seed: int = 0) -> list[dict]:
    """All synthetic rows and up to `per_origin` rows of each real origin, sorted by file.

    One random.Random(seed) serves the origins in sorted order, each origin's
    rows sorted by file before the shuffle, so the draw does not depend on the
    manifest's row order.
    """
    if per_origin < 1:
        raise ValueError(f"per_origin must be at least 1, got {per_origin}")
    missing = {"file", "origin"} - set(rows[0]) if rows else set()
    if missing:
        raise ValueError(f"corpus manifest lacks column(s) {sorted(missing)}")
    rng = random.Random(seed)
    synthetic = [r for r in rows if r["origin"] == SYNTHETIC]
    real: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["origin"] != SYNTHETIC:
            real[r["origin"]].append(r)
    kept = []
    for origin in sorted(real):
        clips = sorted(real[origin], key=lambda r: r["file"])
        rng.shuffle(clips)
        kept += clips[:per_origin]
    return sorted(synthetic + kept, key=lambda r: r["file"])


def write_manifest(corpus: Path, rows: list[dict], out: Path) -> None:
    """A trainer manifest: absolute `path` first, the corpus's other columns kept."""
    corpus = corpus.resolve()
    fields = ["path"] + [k for k in rows[0] if k != "file"]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({"path": str(corpus / r["file"]), **{k: v for k, v in r.items() if k != "file"}})
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True, help="a corpus folder written by python -m eval.corpus.build")
    ap.add_argument("--per-origin", type=int, required=True, help="clips kept from each real origin")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="manifest to write (CSV with a path column)")
    args = ap.parse_args(argv)
    manifest = args.corpus / "manifest.csv"
    rows = read_manifest(args.corpus)
    if not rows:
        raise SystemExit(f"{manifest} lists no clips")
    try:
        kept = draw(rows, args.per_origin, args.seed)
    except ValueError as e:
        raise SystemExit(f"{manifest}: {e}") from None
    write_manifest(args.corpus, kept, args.out)
    n_syn = sum(r["origin"] == SYNTHETIC for r in kept)
    hours = sum(float(r.get("seconds") or 0) for r in kept) / 3600
    print(f"{args.out}: {len(kept)} clips ({n_syn} synthetic, {len(kept) - n_syn} real), {hours:.2f} h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
