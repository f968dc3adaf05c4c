"""The real-recordings part of the pretraining corpus, and the corpus report.

Each package's unreserved sources (see real.reserved_for_tasks) are taken in
sorted order, per kind, in batches of about BATCH_BYTES of encoded audio. A
batch is decoded (16 kHz mono), its recordings joined with GAP_S of silence,
and cut into CLIP_S clips; a last piece of at least MIN_S is kept, shorter.
Batches are fixed by the package contents alone, so the output does not
depend on the number of worker processes.
"""
from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from eval.corpus.kinds import CLIP_S, SYNTH_KIND
from eval.minihear import audio, real
from eval.minihear.sources import LICENSES

GAP_S = 0.25
MIN_S = 1.0
BATCH_BYTES = 8_000_000
SILENT_RMS = 1e-4


def _size(src: real.RealSource) -> int:
    path = Path(src.root) / src.path
    if src.member is None:
        return path.stat().st_size
    return real._zip(str(path)).getinfo(src.member).file_size


def plan(packages: list[str] | None = None, deb_cache: Path | None = None,
         version: str = real.CORPUS_VERSION) -> list[dict]:
    """Jobs {package, kind, batch, sources}; fetches missing packages into the cache.

    From v3 on, a recording whose bytes equal an earlier one's, or a reserved
    source's, is skipped: a sound shipped twice counts once, and a copy of a
    held-out recording in another package stays out."""
    if version not in real.CORPUS_VERSIONS:
        raise ValueError(f"unknown corpus version {version!r}; known: {sorted(real.CORPUS_VERSIONS)}")
    packages = packages or list(real.CORPUS_VERSIONS[version])
    per_package = {p: real.sources(p, deb_cache) for p in packages}
    dedupe = version != "v2"
    seen = {real.content_hash(s) for srcs in per_package.values() for s in srcs
            if real.reserved_for_tasks(s)} if dedupe else set()
    jobs = []
    for package in packages:
        srcs = [s for s in per_package[package] if not real.reserved_for_tasks(s)]
        if dedupe:
            kept = []
            for s in srcs:
                h = real.content_hash(s)
                if h not in seen:
                    seen.add(h)
                    kept.append(s)
            srcs = kept
        for kind in real.KINDS:
            batch, size = [], 0
            for s in (s for s in srcs if s.kind == kind):
                batch.append(s)
                size += _size(s)
                if size >= BATCH_BYTES:
                    jobs.append({"package": package, "kind": kind, "batch": len(jobs), "sources": batch})
                    batch, size = [], 0
            if batch:
                jobs.append({"package": package, "kind": kind, "batch": len(jobs), "sources": batch})
    return jobs


def header_report(jobs: list[dict]) -> dict:
    """Hours (from file headers, before silence trimming), files and licence per package and
    per kind of a plan: what a build would take, without decoding it."""
    per_pkg: dict[str, dict] = {}
    per_kind: dict[str, float] = defaultdict(float)
    for job in jobs:
        d = per_pkg.setdefault(job["package"], {"files": 0, "hours": 0.0, "kinds": defaultdict(float),
                                                "licence": real.PACKAGES[job["package"]][1]})
        for s in job["sources"]:
            h = real.seconds(s) / 3600
            d["files"] += 1
            d["hours"] += h
            d["kinds"][job["kind"]] += h
            per_kind[job["kind"]] += h
    return {"hours_total": sum(per_kind.values()), "hours_per_kind": dict(per_kind),
            "files": sum(d["files"] for d in per_pkg.values()), "packages": per_pkg}


def header_report_md(rep: dict, version: str) -> str:
    lines = [f"Corpus {version}: {rep['hours_total']:.1f} h in {rep['files']} recordings from "
             f"{len(rep['packages'])} packages (hours from file headers, before silence trimming).", "",
             "| kind | hours |", "|---|---|"]
    lines += [f"| {k} | {rep['hours_per_kind'].get(k, 0.0):.2f} |" for k in real.KINDS]
    lines += ["", "| package | speech h | music h | environment h | files | licence |", "|---|---|---|---|---|---|"]
    for p, d in sorted(rep["packages"].items()):
        kh = " | ".join(f"{d['kinds'].get(k, 0.0):.2f}" for k in real.KINDS)
        lines.append(f"| {p} | {kh} | {d['files']} | {d['licence']} |")
    return "\n".join(lines) + "\n"


def _render(args: tuple[dict, str]) -> list[list]:
    job, out = args
    n, gap = int(CLIP_S * audio.SR), np.zeros(int(GAP_S * audio.SR), np.float32)
    pieces, spans, pos = [], [], 0
    for s in job["sources"]:
        x = real.decode(s)
        if x.size == 0:
            continue
        if pieces:
            pieces.append(gap)
            pos += gap.size
        pieces.append(x)
        spans.append((pos, pos + x.size, s.id))
        pos += x.size
    if not pieces:
        return []
    y = np.concatenate(pieces)
    rows = []
    for k, a in enumerate(range(0, y.size, n)):
        clip = y[a : a + n]
        if clip.size < MIN_S * audio.SR or audio.rms(clip) < SILENT_RMS:
            continue
        peak = float(np.abs(clip).max())
        if peak > 0.999:  # resampling can overshoot full scale a little
            clip = clip * (0.999 / peak)
        name = f"real-{job['kind']}-{job['package']}-{job['batch']:04d}-{k:03d}.wav"
        audio.write_wav(Path(out) / name, clip.astype(np.float32))
        ids = [i for s0, e0, i in spans if s0 < a + clip.size and e0 > a]
        rows.append([name, job["kind"], round(clip.size / audio.SR, 3), ";".join(ids), job["package"]])
    return rows


def render(jobs: list[dict], out: Path, n_proc: int) -> list[list]:
    """Decode and write every job's clips; manifest rows in job order."""
    args = [(j, str(out)) for j in jobs]
    if n_proc <= 1:
        results = list(map(_render, args))
    else:
        with Pool(n_proc) as pool:  # imap: a failing job stops the build at once
            results = list(pool.imap(_render, args, chunksize=1))
    return [r for res in results for r in res]


def report_from_manifest(out: Path, mix: str, seed: int = 0) -> dict:
    """Rewrite report.md/json of a built corpus from its manifest.csv."""
    import csv

    with open(out / "manifest.csv", newline="") as f:
        rows = [[r["file"], r["kind"], r["seconds"], r["sources"], r["origin"]] for r in csv.DictReader(f)]
    return write_report(out, rows, mix, seed, 0.0)


def write_report(out: Path, rows: list[list], mix: str, seed: int, synth_hours: float) -> dict:
    """report.json and report.md: hours per kind and per source, with licences."""
    per_kind: dict[str, float] = defaultdict(float)
    per_src: dict[str, dict] = {}
    for _file, kind, seconds, _, origin in rows:
        k = kind if origin != "synthetic" else SYNTH_KIND[kind]
        per_kind[k] += float(seconds) / 3600
        key = origin if origin != "synthetic" else f"synthetic:{kind}"
        d = per_src.setdefault(key, {"hours": 0.0, "clips": 0, "kinds": defaultdict(float)})
        d["hours"] += float(seconds) / 3600
        d["clips"] += 1
        d["kinds"][k] += float(seconds) / 3600
    for key, d in per_src.items():
        if key.startswith("synthetic:"):
            d["licence"] = "; ".join(f"{p} {lic}" for p, lic in LICENSES.items())
        else:
            d["licence"] = real.PACKAGES[key][1]
            d["copyright"] = f"/usr/share/doc/{key}/copyright"
        d["kinds"] = {k: round(v, 3) for k, v in d["kinds"].items()}
        d["hours"] = round(d["hours"], 3)
    real_h = sum(d["hours"] for k, d in per_src.items() if not k.startswith("synthetic:"))
    synth_h = sum(d["hours"] for k, d in per_src.items() if k.startswith("synthetic:"))
    rep = {
        "mix": mix, "seed": seed, "clips": len(rows), "clip_seconds": CLIP_S,
        "hours_total": round(sum(per_kind.values()), 3), "hours_real": round(real_h, 3),
        "hours_synthetic": round(synth_h, 3),
        "hours_per_kind": {k: round(v, 3) for k, v in sorted(per_kind.items())},
        "sources": dict(sorted(per_src.items())),
        "holdout": "no source that any mini-HEAR test split holds (real.reserved_for_tasks; asserted by build_corpus)",
        "written": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(rep, indent=1) + "\n")
    os.replace(tmp, out / "report.json")
    lines = [f"# Pretraining corpus ({mix})", "",
             f"{rep['clips']} clips, {rep['hours_total']:.2f} h: real {rep['hours_real']:.2f} h, "
             f"synthetic {rep['hours_synthetic']:.2f} h. No source of any mini-HEAR test split is included.", "",
             "| kind | hours |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in rep["hours_per_kind"].items()]
    lines += ["", "| source | kinds (h) | hours | clips | licence |", "|---|---|---|---|---|"]
    for key, d in rep["sources"].items():
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in d["kinds"].items())
        lines.append(f"| {key} | {kinds} | {d['hours']:.2f} | {d['clips']} | {d['licence']} |")
    tmp = out / "report.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "report.md")
    return rep


def main(argv: list[str] | None = None) -> int:
    """Print the header-based report of a corpus version (fetches missing packages)."""
    import argparse

    ap = argparse.ArgumentParser(description="Hours by kind and package of a corpus version, from file headers.")
    ap.add_argument("--version", default=real.CORPUS_VERSION, choices=sorted(real.CORPUS_VERSIONS))
    ap.add_argument("--deb-cache", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    rep = header_report(plan(None, args.deb_cache, args.version))
    print(header_report_md(rep, args.version), end="")
    if args.json:
        args.json.write_text(json.dumps(rep, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
