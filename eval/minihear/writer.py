"""Write one task in hearpreprocess's folder layout and render its audio.

<out>/<task>-v1.0-full/
  task_metadata.json, labelvocabulary.csv (idx,label), <split>.json,
  16000/<split>/<file>.wav, plus provenance.json (source item ids per clip,
  which heareval ignores and the disjointness checks read).
Only task folders go under <out>: heareval's ``--task all`` treats every entry
there as a task.
"""
from __future__ import annotations

import csv
import json
import shutil
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from eval.minihear import audio
from eval.minihear.task import Clip, Task

_CACHE: Path | None = None


def _init(cache: Path) -> None:
    global _CACHE
    _CACHE = cache


def _render_one(job: tuple[str, Clip, str]) -> tuple[str, str, float]:
    from eval.minihear.registry import TASKS

    name, clip, task_dir = job
    task = TASKS[name]
    x = task.render(clip, _CACHE)
    x = audio.fit_length(np.asarray(x, np.float32), int(round(task.sample_duration * audio.SR)))
    if not np.isfinite(x).all():
        raise ValueError(f"{name}/{clip['file']}: non-finite samples")
    audio.write_wav(Path(task_dir) / str(audio.SR) / clip["split"] / clip["file"], x)
    return name, clip["split"], x.size / audio.SR


def write_task_files(task: Task, clips: list[Clip], task_dir: Path, small: bool) -> None:
    """Everything except audio: metadata, vocabulary, split json, provenance."""
    if task_dir.exists():
        shutil.rmtree(task_dir)
    task_dir.mkdir(parents=True)
    (task_dir / "task_metadata.json").write_text(json.dumps(task.metadata(small), indent=4) + "\n")
    with open(task_dir / "labelvocabulary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["idx", "label"])
        for i, lab in enumerate(task.labels):
            w.writerow([i, lab])
    prov: dict[str, dict[str, list[str]]] = {}
    for split in task.splits:
        mine = [c for c in clips if c["split"] == split]
        (task_dir / f"{split}.json").write_text(json.dumps({c["file"]: c["target"] for c in mine}, indent=1) + "\n")
        prov[split] = {c["file"]: c["sources"] for c in mine}
        (task_dir / str(audio.SR) / split).mkdir(parents=True, exist_ok=True)
    (task_dir / "provenance.json").write_text(json.dumps(prov, indent=1) + "\n")
    for c in clips:
        labels = [e["label"] for e in c["target"]] if task.embedding_type == "event" else c["target"]
        bad = set(labels) - set(task.labels)
        if bad:
            raise AssertionError(f"{task.name}: labels {bad} not in the vocabulary")


def render_all(jobs: list[tuple[str, Clip, str]], cache: Path, n_proc: int) -> list[tuple[str, str, float]]:
    """Render every clip of every task in one pool, so both cores stay busy."""
    if n_proc <= 1:
        _init(cache)
        return [_render_one(j) for j in jobs]
    with Pool(n_proc, initializer=_init, initargs=(cache,)) as pool:
        return list(pool.imap_unordered(_render_one, jobs, chunksize=4))
