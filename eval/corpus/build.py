"""Build the unlabelled pretraining corpus from the mini-HEAR sources.

    python -m eval.corpus.build --out corpus/ --hours 5 [--seed 0]                # synthetic (v1)
    python -m eval.corpus.build --out corpus/ --mix real|both [--packages a,b]  # + real recordings

No clip shares a source with any mini-HEAR test split (asserted while building).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from eval.corpus.kinds import MIXES
from eval.corpus.synthetic import build_corpus
from eval.minihear.build import dir_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", "--corpus", dest="out", type=Path, required=True,
                    help="corpus folder to write (clips, manifest.csv, report.md/json)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hours", type=float, default=5.0, help="synthetic corpus size (hours of audio)")
    ap.add_argument("--mix", choices=MIXES, default="synthetic",
                    help="corpus content: real recordings from Debian packages, synthetic mixtures, or both")
    ap.add_argument("--packages", default="", help="comma-separated real-audio packages (default: the version's)")
    ap.add_argument("--corpus-version", default=None,
                    help="real-audio corpus version: v2 or v3 (default: the newest; v2 rebuilds the old corpus)")
    ap.add_argument("--deb-cache", type=Path, default=None,
                    help="where heavy packages are downloaded and unpacked (default $HEAR_ABT_CACHE or ~/.cache/hear-abt)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cache", type=Path, default=None, help="keep rendered note banks here (default: temporary)")
    args = ap.parse_args(argv)

    if args.deb_cache:  # real.sources / debs.fetch read it, also in worker processes
        os.environ["HEAR_ABT_CACHE"] = str(args.deb_cache.expanduser().resolve())
    if args.hours <= 0 and args.mix != "real":
        ap.error("--hours must be > 0 for a synthetic or mixed corpus")
    t0 = time.time()
    pkgs = [s for s in args.packages.split(",") if s] or None
    n = build_corpus(args.out, args.hours, args.seed, args.jobs, args.cache, args.mix, pkgs,
                     version=args.corpus_version)
    print(f"corpus ({args.mix}): {n} files, {dir_size(args.out) / 1e6:.1f} MB in {args.out}, "
          f"built in {time.time() - t0:.1f} s with {args.jobs} processes; see {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
