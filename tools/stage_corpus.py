"""Stage a corpus onto a lent machine over several calls, then train on all of it.

One call carries 64 MiB, so a corpus travels as packs (python -m eval.corpus.pack
--shards K). Call i copies pack i into a stage folder outside the working
tree, which the machine keeps between calls while it is held, and rewrites
the stage's manifest of every pack staged so far. With --prepare it then
builds the trainer's log-mel cache of that manifest (`python -m
hear_abt.train --prepare`); --train runs
the trainer on the whole stage, refusing until all K packs are there.

The trainer's cache is keyed by its whole file list, so --prepare after
call i decodes packs 0..i again; when calls are short, stage without it and
--prepare once, in the last staging call or with --train.

    python -m tools.stage_corpus --stage-dir /root/abt-stage --pack gpu_packs/pack-00 [--prepare -- --set workers=16]
    python -m tools.stage_corpus --stage-dir /root/abt-stage --train -- --device cuda --steps 8000 --run-dir /root/run

Repeating a call is harmless: a pack already staged is checked and skipped.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

MANIFEST = "manifest.csv"  # the stage's: every staged clip, relative to the stage folder
AUDIO = "audio"
CACHE = "mels"


class StageError(RuntimeError):
    """A pack that does not belong with the ones staged, or a stage that is not complete."""


def _pack_report(pack: Path) -> dict:
    path = pack / "report.json"
    if not path.is_file() or not (pack / MANIFEST).is_file():
        raise StageError(f"{pack} is not a pack of python -m eval.corpus.pack --shards (no report.json / manifest.csv)")
    rep = json.loads(path.read_text(encoding="utf-8"))
    if "shard" not in rep:
        raise StageError(f"{pack} was packed without --shards: it does not say which part of the corpus it is")
    return rep


def staged(stage: Path) -> dict[str, dict]:
    """Pack name -> its report, for every pack in the stage."""
    root = stage / AUDIO
    return {p.name: _pack_report(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")} \
        if root.is_dir() else {}


def stage_pack(pack: Path, stage: Path) -> bool:
    """Copy a pack into the stage (tmp + rename); False if it was there already."""
    rep = _pack_report(pack)
    have = staged(stage)
    other = {r["corpus_id"] for r in have.values()} - {rep["corpus_id"]}
    if other:
        raise StageError(f"{pack} is of corpus {rep['corpus_id']}, the stage holds {sorted(other)}: use another --stage-dir")
    dest = stage / AUDIO / pack.name
    if dest.is_dir():
        if (dest / MANIFEST).read_bytes() != (pack / MANIFEST).read_bytes():
            raise StageError(f"{dest} holds another {pack.name}: use another --stage-dir")
        return False
    tmp = stage / AUDIO / f".{pack.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(pack, tmp)
    os.replace(tmp, dest)
    return True


def write_manifest(stage: Path) -> int:
    """The stage's manifest (every staged clip once, packs in order); returns its clip count."""
    rows = []
    for name in staged(stage):
        with (stage / AUDIO / name / MANIFEST).open(newline="", encoding="utf-8") as f:
            rows += [[f"{AUDIO}/{name}/{r['path']}", r["kind"], r["seconds"], r["origin"]] for r in csv.DictReader(f)]
    tmp = stage / (MANIFEST + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "kind", "seconds", "origin"])
        w.writerows(rows)
    os.replace(tmp, stage / MANIFEST)
    return len(rows)


def missing(stage: Path) -> list[int]:
    """Shards of the staged corpus that are not staged yet (all of them if none is)."""
    have = staged(stage)
    if not have:
        return [0]
    k = next(iter(have.values()))["shards"]
    return sorted(set(range(k)) - {r["shard"] for r in have.values()})


def trainer(stage: Path, *extra: str) -> list[str]:
    """The trainer's command line on the stage's manifest and cache."""
    return [sys.executable, "-m", "hear_abt.train", "--data", str(stage / MANIFEST),
            "--cache-dir", str(stage / CACHE), *extra]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="arguments after -- go to python -m hear_abt.train, for --prepare and --train alike "
                                        "(the cache's mel settings must be the run's)")
    ap.add_argument("--stage-dir", type=Path, required=True, help="the stage folder, outside the working tree")
    ap.add_argument("--pack", type=Path, action="append", default=[], help="a pack to stage (repeatable)")
    ap.add_argument("--prepare", action="store_true", help="build the log-mel cache of everything staged")
    ap.add_argument("--train", action="store_true", help="train on the whole stage (all packs must be staged)")
    args = ap.parse_args(argv)
    stage = args.stage_dir.expanduser().resolve()
    (stage / AUDIO).mkdir(parents=True, exist_ok=True)
    try:
        for pack in args.pack:
            print(f"{pack.name}: {'staged' if stage_pack(pack, stage) else 'already staged'}")
        n = write_manifest(stage)
        left = missing(stage)
        print(json.dumps({"stage": str(stage), "packs": len(staged(stage)), "clips": n, "missing_shards": left}))
        if args.train and left:
            raise StageError(f"shards {left} are not staged yet: stage them before --train")
    except StageError as e:
        raise SystemExit(str(e)) from None
    if n == 0:
        return 0
    if args.prepare or args.train:
        rc = subprocess.run(trainer(stage, "--prepare", *extra)).returncode
        if rc:
            return rc
    if args.train:
        return subprocess.run(trainer(stage, *extra)).returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
