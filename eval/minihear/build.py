"""Build the mini-HEAR suite (or the pretraining corpus) from Debian-packaged audio.

    python eval/minihear/build.py --out tasks/ [--seed 0] [--small] [--tasks a,b]
    python eval/minihear/build.py --corpus corpus/ --hours 5 [--seed 0]                # synthetic (v1)
    python eval/minihear/build.py --corpus corpus/ --mix real|both [--packages a,b]  # + real recordings

Task builds also score the log-mel baseline and write a card per task
(<task>/README.md; --cards-md for the combined file).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `eval.minihear` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "eval.minihear"

from eval.minihear import writer  # noqa: E402
from eval.minihear.registry import TASKS  # noqa: E402


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_tasks(out: Path, seed: int = 0, small: bool = False, names: list[str] | None = None,
                n_proc: int | None = None, cache: Path | None = None) -> dict[str, list]:
    """Plan, write and render the tasks; returns {task name: clips}."""
    from eval.minihear.registry import small_tasks

    names = names or (small_tasks() if small else list(TASKS))
    unknown = set(names) - set(TASKS)
    if unknown:
        raise SystemExit(f"unknown task(s) {sorted(unknown)}; known: {list(TASKS)}")
    heavy = [n for n in names if small and TASKS[n].heavy]
    if heavy:
        raise SystemExit(f"task(s) {heavy} need heavy packages and have no --small build")
    out.mkdir(parents=True, exist_ok=True)
    plans, jobs = {}, []
    for name in names:
        task = TASKS[name]
        clips = task.plan(seed, small)
        writer.write_task_files(task, clips, out / task.folder, small)
        plans[name] = clips
        jobs += [(name, c, str(out / task.folder)) for c in clips]
    # Long clips first so the pool's tail is short.
    jobs.sort(key=lambda j: -TASKS[j[0]].sample_duration)
    with tempfile.TemporaryDirectory(prefix="minihear-cache-") as tmp:
        writer.render_all(jobs, cache or Path(tmp), n_proc or os.cpu_count() or 1)
    return plans


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", type=Path, help="tasks folder to write (one sub-folder per task)")
    what.add_argument("--corpus", type=Path, help="write unlabelled pretraining audio here instead")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small", action="store_true", help="a few clips per class, for tests and CI")
    ap.add_argument("--tasks", default="", help="comma-separated subset of: " + ",".join(TASKS))
    ap.add_argument("--hours", type=float, default=5.0, help="synthetic corpus size (hours of audio)")
    ap.add_argument("--mix", choices=["real", "synthetic", "both"], default="synthetic",
                    help="corpus content: real recordings from Debian packages, synthetic mixtures, or both")
    ap.add_argument("--packages", default="", help="comma-separated real-audio packages (default: the version's)")
    ap.add_argument("--corpus-version", default=None,
                    help="real-audio corpus version: v2 or v3 (default: the newest; v2 rebuilds the old corpus)")
    ap.add_argument("--deb-cache", type=Path, default=None,
                    help="where heavy packages are downloaded and unpacked (default $HEAR_ABT_CACHE or ~/.cache/hear-abt)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cache", type=Path, default=None, help="keep rendered note banks here (default: temporary)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the log-mel baseline and the cards")
    ap.add_argument("--cards-md", type=Path, default=None, help="also write all cards into this markdown file")
    args = ap.parse_args(argv)

    if args.deb_cache:  # real.sources / debs.fetch read it, also in worker processes
        os.environ["HEAR_ABT_CACHE"] = str(args.deb_cache.expanduser().resolve())
    t0 = time.time()
    if args.corpus:
        from eval.minihear import corpus

        pkgs = [s for s in args.packages.split(",") if s] or None
        if args.hours <= 0 and args.mix != "real":
            raise SystemExit("--hours must be > 0 for a synthetic or mixed corpus")
        n = corpus.build_corpus(args.corpus, args.hours, args.seed, args.jobs, args.cache, args.mix, pkgs,
                                 version=args.corpus_version)
        dt = time.time() - t0
        print(f"corpus ({args.mix}): {n} files, {dir_size(args.corpus) / 1e6:.1f} MB in {args.corpus}, "
              f"built in {dt:.1f} s with {args.jobs} processes; see {args.corpus / 'report.md'}")
        return 0

    names = [s for s in args.tasks.split(",") if s] or None
    plans = build_tasks(args.out, args.seed, args.small, names, args.jobs, args.cache)
    t_audio = time.time() - t0
    if not args.no_baseline:
        from eval.minihear import cards

        cards.write_cards(args.out, plans, args.seed, args.small, args.cards_md)
    dt = time.time() - t0
    print(f"built {len(plans)} tasks in {args.out}: {dir_size(args.out) / 1e6:.1f} MB; "
          f"audio {t_audio:.1f} s, total {dt:.1f} s (seed {args.seed}, {'small' if args.small else 'full'}, "
          f"{args.jobs} processes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
