"""The 18 HEAR 2021 tasks, the paper's task groups, and grouping of any task folder.

Why one module: run.py, the score collector and leaderboard.py all need to
know which folder is which paper task and which group (speech, env, music,
event) it counts towards; this is the one place that says so.

Folder names are the official ones of the HEAR 2021 task archives
(``hear2021-<folder>-<rate>.tar.gz``), as heareval's runners see them.
Mini-HEAR tasks (built offline by this project) say in ``task_metadata.json``
which group they mirror: ``mirrors_group`` ("speech" | "env" | "music" |
"event"), or ``mirrors_task`` naming a HEAR folder or paper task key.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

GROUPS = ("speech", "env", "music", "event")


class HearTask(NamedTuple):
    folder: str  # official task folder name
    key: str  # short key used in eval/paper_scores.json and table headers
    group: str


HEAR2021_TASKS: tuple[HearTask, ...] = (
    HearTask("tfds_crema_d-1.0.0-full", "crema_d", "speech"),
    HearTask("libricount-v1.0.0-hear2021-full", "libricount", "speech"),
    HearTask("speech_commands-v0.0.2-5h", "speech_commands_5h", "speech"),
    HearTask("speech_commands-v0.0.2-full", "speech_commands_full", "speech"),
    HearTask("vocal_imitation-v1.1.3-full", "vocal_imitation", "speech"),
    HearTask("vox_lingua_top10-hear2021-full", "vox_lingua_top10", "speech"),
    HearTask("esc50-v2.0.0-full", "esc50", "env"),
    HearTask("fsd50k-v1.0-full", "fsd50k", "env"),
    HearTask("gunshot_triangulation-v1.0-full", "gunshot_triangulation", "env"),
    HearTask("beijing_opera-v1.0-hear2021-full", "beijing_opera", "music"),
    HearTask("tfds_gtzan-1.0.0-full", "gtzan_genre", "music"),
    HearTask("tfds_gtzan_music_speech-1.0.0-full", "gtzan_music_speech", "music"),
    HearTask("mridangam_stroke-v1.5-full", "mridangam_stroke", "music"),
    HearTask("mridangam_tonic-v1.5-full", "mridangam_tonic", "music"),
    HearTask("nsynth_pitch-v2.2.3-5h", "nsynth_pitch_5h", "music"),
    HearTask("nsynth_pitch-v2.2.3-50h", "nsynth_pitch_50h", "music"),
    HearTask("dcase2016_task2-hear2021-full", "dcase2016_task2", "event"),
    HearTask("maestro-v3.0.0-5h", "maestro_5h", "event"),
)
BY_FOLDER = {t.folder: t for t in HEAR2021_TASKS}
BY_KEY = {t.key: t for t in HEAR2021_TASKS}
# Other spellings seen in the wild for the same task.
BY_FOLDER["tfds_speech_commands-v0.0.2-full"] = BY_FOLDER["speech_commands-v0.0.2-full"]

_GROUP_ALIASES = {"environment": "env", "environmental": "env", "events": "event"}


def _normalise_group(group: str) -> str:
    g = _GROUP_ALIASES.get(group.lower(), group.lower())
    if g not in GROUPS:
        raise ValueError(f"unknown task group {group!r}; use one of {GROUPS}")
    return g


def read_metadata(task_dir: Path) -> dict:
    path = Path(task_dir) / "task_metadata.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def paper_key(folder: str) -> str | None:
    """The paper task a folder *is* (official HEAR folders only)."""
    task = BY_FOLDER.get(folder)
    return task.key if task else None


def task_group(folder: str, metadata: dict | None = None) -> str:
    """Group of a task folder: official name, else what its metadata mirrors.

    Falls back to "event" / "other" from ``embedding_type`` so an unknown task
    still lands in a table rather than being dropped.
    """
    if folder in BY_FOLDER:
        return BY_FOLDER[folder].group
    metadata = metadata or {}
    if metadata.get("mirrors_group"):
        return _normalise_group(metadata["mirrors_group"])
    mirrored = metadata.get("mirrors_task")
    if mirrored:
        task = BY_FOLDER.get(mirrored) or BY_KEY.get(mirrored)
        if task:
            return task.group
    return "event" if metadata.get("embedding_type") == "event" else "other"


def find_tasks(tasks_dir: Path) -> list[Path]:
    """Task folders (those holding task_metadata.json), official order first."""
    found = sorted(p.parent for p in Path(tasks_dir).glob("*/task_metadata.json"))
    order = {t.folder: i for i, t in enumerate(HEAR2021_TASKS)}
    return sorted(found, key=lambda p: (order.get(p.name, len(order)), p.name))
