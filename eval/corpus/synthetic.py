"""Unlabelled pretraining audio from the same sources as the tasks.

How disjointness from every test split is guaranteed: the corpus only takes
source items that no task can put in a test split --
  - espeak-ng voice variants, instruments (soundfont, program) and drum samples
    whose fixed hold-out role (sources.holdout_role, independent of any seed)
    is not "test", and
  - sound-effect files that no task uses at all (sources.task_sfx_ids), plus
    the long game music tracks, which no task uses.
build_corpus then re-plans every task (full and small) with the same seed and
asserts that no source id of any test split (every fold of k-fold tasks)
appears in the corpus manifest.
"""
from __future__ import annotations

import csv
import math
import tempfile
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from eval.corpus import real_corpus
from eval.corpus.kinds import CLIP_S, MIXES
from eval.minihear import audio, real, sources

KINDS = ["speech", "speech", "speech", "music", "music", "drums", "sfx", "game_music"]
CORPUS_LANGS = sources.ENGLISH + sources.LANGUAGES + ["ru", "cs", "fi", "hu", "tr", "ro", "da", "el"]


def _corpus_sfx() -> tuple[list[str], list[str]]:
    """(short effects, long music tracks) that no task uses."""
    taken = sources.task_sfx_ids()
    free = [s for s in sources.all_sfx() if s.id not in taken]
    short = [s.path for s in free if "mainzik" not in s.path and "introzik" not in s.path]
    long = [s.path for s in free if s.path not in short]
    return short, long


def _non_test(items: list, key) -> list:
    return [i for i in items if sources.holdout_role(key(i)) != "test"]


def plan_corpus(hours: float, seed: int) -> list[dict]:
    rng = np.random.default_rng([seed, 7919])
    voices = _non_test(list(sources.voice_variants()), lambda v: f"voice:{v}")
    insts = sources.instruments_for("train") + sources.instruments_for("valid")
    drums = _non_test([p for p, _ in sources.drum_samples()], sources.drum_id)
    short, long = _corpus_sfx()
    items = []
    for i in range(max(1, math.ceil(hours * 3600 / CLIP_S))):
        kind = str(rng.choice(KINDS))
        if kind == "speech":
            talkers = []
            for _ in range(int(rng.choice([1, 1, 1, 2]))):
                lang = str(rng.choice(CORPUS_LANGS))
                text = (" ".join(rng.choice(sources.FILLER, size=int(rng.integers(8, 20)))) if lang.startswith("en")
                        else ", ".join(str(int(rng.integers(0, 10**6))) for _ in range(int(rng.integers(2, 6)))))
                talkers.append({"lang": lang, "text": text, "variant": str(rng.choice(voices)),
                                "wpm": int(rng.integers(100, 240)), "pitch": int(rng.integers(0, 99)),
                                "offset": float(rng.uniform(0, 3))})
            rec = {"talkers": talkers}
            srcs = [f"voice:{t['variant']}" for t in talkers]
        elif kind == "music":
            parts = [insts[j] for j in rng.choice(len(insts), size=int(rng.integers(1, 3)), replace=False)]
            rec = {"parts": [{"sf": sf, "program": int(p), "notes": [int(n) for n in rng.integers(40, 80, size=int(rng.integers(6, 24)))]}
                             for sf, p in parts], "bpm": int(rng.integers(60, 180))}
            srcs = [sources.instrument_id(sf, int(p)) for sf, p in parts]
        elif kind == "drums":
            kit = [drums[j] for j in rng.choice(len(drums), size=4, replace=False)]
            rec = {"kit": kit, "bpm": int(rng.integers(70, 180)), "pattern": rng.integers(0, 5, size=32).tolist()}
            srcs = [sources.drum_id(p) for p in kit]
        elif kind == "sfx":
            picks = [short[j] for j in rng.choice(len(short), size=int(rng.integers(3, 10)))]
            rec = {"paths": picks, "onsets": sorted(rng.uniform(0, CLIP_S - 0.5, size=len(picks)).tolist())}
            srcs = sorted({s.id for s in sources.all_sfx() if s.path in picks})
        else:
            path = str(rng.choice(long))
            rec = {"path": path, "start_s": None}
            srcs = [s.id for s in sources.all_sfx() if s.path == path]
        items.append({"file": f"{kind}-{i:06d}.wav", "kind": kind, "recipe": rec, "sources": srcs, "seed": [seed, 7919, i]})
    return items


_CACHE: Path | None = None


def _init(cache: Path) -> None:
    global _CACHE
    _CACHE = cache


def _render(item: dict) -> np.ndarray:
    rng = np.random.default_rng(item["seed"])
    n = int(CLIP_S * audio.SR)
    mix = np.zeros(n, np.float32)
    r = item["recipe"]

    def at(x: np.ndarray, start: int) -> None:
        x = x[: max(0, n - start)]
        mix[start : start + x.size] += x

    if item["kind"] == "speech":
        for t in r["talkers"]:
            x = sources.speak(t["text"], t["lang"], t["variant"], t["wpm"], t["pitch"])
            at(x / audio.rms(x), int(t["offset"] * audio.SR))
    elif item["kind"] == "music":
        step = int(audio.SR * 60 / r["bpm"])
        for part in r["parts"]:
            for j, m in enumerate(part["notes"]):
                at(sources.note(_CACHE, part["sf"], part["program"], m), j * step)
    elif item["kind"] == "drums":
        step = int(audio.SR * 30 / r["bpm"])
        for j, k in enumerate(r["pattern"] * 4):
            if k < 4:
                at(audio.load(r["kit"][k]) * rng.uniform(0.3, 1.0), j * step)
    elif item["kind"] == "sfx":
        for p, t in zip(r["paths"], r["onsets"]):
            x = audio.load(p)
            at(x / audio.rms(x) * rng.uniform(0.2, 1.0), int(t * audio.SR))
    else:
        x = audio.load(r["path"])
        s = int(rng.integers(0, max(1, x.size - n)))
        at(x[s : s + n], 0)
    if audio.rms(mix) < 1e-5:
        mix = audio.colored_noise(n, rng, 1.0) * 0.01
    return audio.nuisance(mix, rng, snr_db=(5, 40), reverb_prob=0.4)


def _job(args: tuple[dict, str]) -> str:
    item, out = args
    audio.write_wav(Path(out) / item["file"], _render(item))
    return item["file"]


def test_split_sources(seed: int, used: set[str] | None = None) -> set[str]:
    """Every source id that any task (full or small build, this seed) puts in a test split.

    A real-audio task whose packages are not at hand is not planned (that would
    download them); then `used` (the corpus's source ids) must hold nothing from
    those packages, which is asserted instead.
    """
    from eval.minihear import debs
    from eval.minihear.registry import TASKS

    ids: set[str] = set()
    for task in TASKS.values():
        test_splits = {"test"} if task.split_mode == "trainvaltest" else set(task.splits)
        missing = [p for p in task.packages if p in real.PACKAGES and debs.package_root(p) is None]
        if missing:
            clash = {s for s in used or () for p in missing if s.startswith(f"real:{p}/")}
            assert not clash, f"{task.name}: corpus sources from {missing} cannot be checked without those packages"
            continue
        for small in ((False,) if task.heavy else (False, True)):
            for c in task.plan(seed, small):
                if c["split"] in test_splits:
                    ids.update(c["sources"])
    return ids


def read_manifest(folder: Path) -> list[dict]:
    """The rows of a built corpus's manifest.csv, for the tools that take `--corpus`."""
    manifest = Path(folder) / "manifest.csv"
    if not manifest.is_file():
        raise SystemExit(f"{manifest} not found: --corpus must be a folder built by python -m eval.corpus.build")
    with manifest.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def build_corpus(out: Path, hours: float, seed: int, n_proc: int, cache: Path | None = None,
                 mix: str = "synthetic", packages: list[str] | None = None, deb_cache: Path | None = None,
                 version: str | None = None) -> int:
    """Write the corpus (clips, manifest.csv, report.md/json); returns the number of clips.

    mix "synthetic": `hours` of rendered mixtures (the v1 corpus); "real": every
    unreserved recording of `packages` (default: those of corpus `version`, by default
    real.CORPUS_VERSION); "both": the two.
    """
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}, not {mix!r}")
    items = plan_corpus(hours, seed) if mix != "real" else []
    jobs = real_corpus.plan(packages, deb_cache, version or real.CORPUS_VERSION) if mix != "synthetic" else []
    used = {s for it in items for s in it["sources"]} | {s.id for j in jobs for s in j["sources"]}
    overlap = used & test_split_sources(seed, used)
    assert not overlap, f"corpus would share {len(overlap)} test items with the tasks, e.g. {sorted(overlap)[:5]}"
    out.mkdir(parents=True, exist_ok=True)
    rows = [[it["file"], it["kind"], CLIP_S, ";".join(it["sources"]), "synthetic"] for it in items]
    if jobs:
        rows += real_corpus.render(jobs, out, n_proc)
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "kind", "seconds", "sources", "origin"])
        w.writerows(rows)
    real_corpus.write_report(out, rows, mix, seed, hours if items else 0.0)
    if not items:
        return len(rows)
    with tempfile.TemporaryDirectory(prefix="minihear-cache-") as tmp:
        c = cache or Path(tmp)
        jobs = [(it, str(out)) for it in items]
        if n_proc <= 1:
            _init(c)
            list(map(_job, jobs))
        else:
            with Pool(n_proc, initializer=_init, initargs=(c,)) as pool:
                list(pool.imap_unordered(_job, jobs, chunksize=8))
    return len(rows)
