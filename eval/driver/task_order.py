"""The order in which ``python -m eval.driver.run --jobs N`` starts its tasks: longest first.

With N tasks at a time a run ends when its last task ends. In folder order a
long task that happens to come late (the mini DCASE onset task's predictor
takes more than ten times as long as a scene task's, and event tasks sort
last) runs alone on cores / N threads while the other workers have nothing
left. Starting the longest first (Graham's LPT rule) keeps the run within
4/3 of the best schedule when the times are right.

A task's expected time is what is left of it: its embeddings (unless done
or copied from another tag) plus its predictions (unless done). Each is the
median over the earlier tags in the results folder that timed that task,
preferring tags with the same grid. Embedding times of tags whose
embeddings were copied are not timings of an embedding, so they are left
out. A task never timed starts first, since it may be the longest and then
its time is known; among those, event tasks (their predictor trains on
every frame) before scene tasks, then bigger folders first.
"""
from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path

from eval.driver.hear_tasks import read_metadata

STAGES = ("embeddings", "predictions")


def earlier_timings(results_dir: Path, grid: str) -> dict[str, dict[str, float]]:
    """Task -> stage -> median seconds over the tags under ``results_dir``."""
    same: dict[tuple[str, str], list[float]] = {}
    other: dict[tuple[str, str], list[float]] = {}
    for path in sorted(Path(results_dir).glob("*/scores.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a half-written or foreign file tells nothing about timings
        if not isinstance(data, dict) or not isinstance(data.get("timing_s"), dict):
            continue
        copied = data.get("embeddings_copied_from") or {}
        bucket = same if data.get("grid") == grid else other
        for task, stages in data["timing_s"].items():
            if not isinstance(stages, dict):
                continue
            for stage in STAGES:
                seconds = stages.get(stage)
                if stage == "embeddings" and task in copied:
                    continue
                if isinstance(seconds, (int, float)) and seconds > 0:
                    bucket.setdefault((task, stage), []).append(float(seconds))
    out: dict[str, dict[str, float]] = {}
    for key in same.keys() | other.keys():
        task, stage = key
        out.setdefault(task, {})[stage] = statistics.median(same.get(key) or other[key])
    return out


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def expected_seconds(name: str, left: Mapping[str, tuple[str, ...]],
                     timings: Mapping[str, Mapping[str, float]]) -> float | None:
    """Seconds still to go for task ``name``; None when a stage it needs was
    never timed. ``left`` maps a task to the stages it still needs (a task
    not in it needs both)."""
    stages = left.get(name, STAGES)
    known = timings.get(name, {})
    if any(stage not in known for stage in stages):
        return None
    return sum(known[stage] for stage in stages)


def longest_first(tasks: list[Path], left: Mapping[str, tuple[str, ...]],
                  timings: Mapping[str, Mapping[str, float]]) -> list[Path]:
    """``tasks`` in the order to start them (module docstring)."""
    times = {t.name: expected_seconds(t.name, left, timings) for t in tasks}
    untimed = [t for t in tasks if times[t.name] is None]
    untimed.sort(key=lambda t: (read_metadata(t).get("embedding_type") != "event", -_folder_bytes(t)))
    timed = sorted((t for t in tasks if times[t.name] is not None), key=lambda t: -times[t.name])
    return untimed + timed


def describe_order(tasks: list[Path], left: Mapping[str, tuple[str, ...]],
                   timings: Mapping[str, Mapping[str, float]]) -> str:
    """One line for the run's output: the order and each task's expected time."""
    parts = []
    for t in tasks:
        seconds = expected_seconds(t.name, left, timings)
        parts.append(f"{t.name} (never timed)" if seconds is None else f"{t.name} ~{seconds:.0f} s")
    return "longest first: " + ", ".join(parts)
