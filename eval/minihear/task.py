"""What a mini task is: its HEAR metadata plus a planner and a renderer.

Planning (cheap, single process) decides every clip's split, file name, target
and source items from the seed; rendering (the expensive part, run in a
process pool) turns one planned clip into audio using a per-clip RNG, so the
result does not depend on which worker renders what.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

Clip = dict[str, Any]  # keys: task, split, file, target, sources, recipe, seed


@dataclass
class Task:
    name: str                  # task_name in task_metadata.json
    mirrors: str               # the HEAR 2021 task it imitates
    group: str                 # speech | environment | music | event
    embedding_type: str        # scene | event
    prediction_type: str       # multiclass | multilabel
    split_mode: str            # trainvaltest | new_split_kfold
    splits: list[str]
    sample_duration: float     # seconds; every clip is padded/trimmed to it
    evaluation: list[str]
    labels: list[str]
    plan: Callable[[int, bool], list[Clip]]
    render: Callable[[Clip, Path], np.ndarray]
    description: str = ""
    packages: list[str] = field(default_factory=list)
    tuning: str = ""           # what was changed so the log-mel baseline is neither trivial nor hopeless
    evaluation_params: dict[str, Any] | None = None
    nfolds: int | None = None
    heavy: bool = False        # needs packages fetched on demand (real.HEAVY): no --small build

    @property
    def folder(self) -> str:
        return f"{self.name}-v1.0-full"

    def metadata(self, small: bool) -> dict[str, Any]:
        """task_metadata.json, with the keys hearpreprocess writes and heareval reads."""
        md: dict[str, Any] = {
            "task_name": self.name,
            "version": "v1.0",
            "embedding_type": self.embedding_type,
            "prediction_type": self.prediction_type,
            "split_mode": self.split_mode,
            "sample_duration": self.sample_duration,
            "evaluation": self.evaluation,
            "default_mode": "full",
            "mode": "small" if small else "full",
            "splits": self.splits,
            "mirrors_hear_task": self.mirrors,
            "mirrors_group": self.group,  # eval/driver/hear_tasks.task_group reads it first
            "generator": "hear-abt eval/minihear",
        }
        if self.nfolds:
            md["nfolds"] = self.nfolds
        if self.evaluation_params:
            md["evaluation_params"] = self.evaluation_params
        return md


def clip_rng(clip: Clip) -> np.random.Generator:
    return np.random.default_rng(clip["seed"])


def balanced_labels(n: int, labels: list[str], rng: np.random.Generator) -> list[str]:
    """n labels, as equal in count as possible, in random order."""
    out = [labels[i % len(labels)] for i in range(n)]
    rng.shuffle(out)
    return out
