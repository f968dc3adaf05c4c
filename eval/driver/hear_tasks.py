"""The 18 HEAR 2021 tasks, the paper's task groups, and grouping of any task folder.

Why one module: run.py, the score collector and leaderboard.py all need to
know which folder is which paper task and which group (speech, env, music,
event) it counts towards; this is the one place that says so.

Folder names are the official ones of the HEAR 2021 task archives
(``hear2021-<folder>-<rate>.tar.gz``), as heareval's runners see them.
Mini-HEAR tasks (built offline by this project) say in ``task_metadata.json``
what they mirror: ``mirrors_group`` ("speech" | "env" | "music" | "event")
wins; else ``mirrors_task`` / ``mirrors_hear_task`` naming a HEAR folder, a
task key, or in words ("ESC-50 (5 folds)"); else the folder name without a
``mini_`` prefix is matched against the HEAR names.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

GROUPS = ("speech", "env", "music", "event")


class HearTask(NamedTuple):
    folder: str  # official task folder name
    key: str  # short key used in eval/driver/paper_scores.json and table headers
    group: str
    title: str  # how papers name it; matched in mini tasks' free-text "mirrors"


HEAR2021_TASKS: tuple[HearTask, ...] = (
    HearTask("tfds_crema_d-1.0.0-full", "crema_d", "speech", "CREMA-D"),
    HearTask("libricount-v1.0.0-hear2021-full", "libricount", "speech", "LibriCount"),
    HearTask("speech_commands-v0.0.2-5h", "speech_commands_5h", "speech", "Speech Commands"),
    HearTask("speech_commands-v0.0.2-full", "speech_commands_full", "speech", "Speech Commands"),
    HearTask("vocal_imitation-v1.1.3-full", "vocal_imitation", "speech", "Vocal Imitation"),
    HearTask("vox_lingua_top10-hear2021-full", "vox_lingua_top10", "speech", "VoxLingua"),
    HearTask("esc50-v2.0.0-full", "esc50", "env", "ESC-50"),
    HearTask("fsd50k-v1.0-full", "fsd50k", "env", "FSD50K"),
    HearTask("gunshot_triangulation-v1.0-full", "gunshot_triangulation", "env", "Gunshot"),
    HearTask("beijing_opera-v1.0-hear2021-full", "beijing_opera", "music", "Beijing Opera"),
    HearTask("tfds_gtzan-1.0.0-full", "gtzan_genre", "music", "GTZAN"),
    HearTask("tfds_gtzan_music_speech-1.0.0-full", "gtzan_music_speech", "music", "GTZAN"),
    HearTask("mridangam_stroke-v1.5-full", "mridangam_stroke", "music", "Mridangam"),
    HearTask("mridangam_tonic-v1.5-full", "mridangam_tonic", "music", "Mridangam"),
    HearTask("nsynth_pitch-v2.2.3-5h", "nsynth_pitch_5h", "music", "NSynth"),
    HearTask("nsynth_pitch-v2.2.3-50h", "nsynth_pitch_50h", "music", "NSynth"),
    HearTask("dcase2016_task2-hear2021-full", "dcase2016_task2", "event", "DCASE 2016"),
    HearTask("maestro-v3.0.0-5h", "maestro_5h", "event", "MAESTRO"),
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
    """The task's metadata; {} when missing or unreadable, so that ordering
    and grouping go on and eval/driver/task_check.py names the broken file."""
    try:
        value = json.loads((Path(task_dir) / "task_metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return {}
    return value if isinstance(value, dict) else {}


def paper_key(folder: str) -> str | None:
    """The paper task a folder *is* (official HEAR folders only)."""
    task = BY_FOLDER.get(folder)
    return task.key if task else None


def _match(text: str) -> HearTask | None:
    """A HEAR task named by folder, key, folder prefix, or title in ``text``."""
    text = text.strip()
    if text in BY_FOLDER or text in BY_KEY:
        return BY_FOLDER.get(text) or BY_KEY[text]
    stem = text.split("-")[0].lower().removeprefix("mini_")
    for task in HEAR2021_TASKS:
        if stem and (task.folder.split("-")[0].removeprefix("tfds_") == stem or task.key == stem):
            return task
    lowered = text.lower()
    return next((t for t in HEAR2021_TASKS if t.title.lower() in lowered), None)


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
    for text in (metadata.get("mirrors_task"), metadata.get("mirrors_hear_task"), folder):
        task = _match(text) if text else None
        if task:
            return task.group
    return "event" if metadata.get("embedding_type") == "event" else "other"


def find_tasks(tasks_dir: Path) -> list[Path]:
    """Task folders (those holding task_metadata.json), in table order.

    Official tasks in the order above, then the rest by group and name, so
    progress output and tables read group by group.
    """
    found = [p.parent for p in Path(tasks_dir).glob("*/task_metadata.json")]
    order = {t.folder: i for i, t in enumerate(HEAR2021_TASKS)}
    groups = {g: i for i, g in enumerate((*GROUPS, "other"))}

    def key(p: Path) -> tuple[int, int, str]:
        return (order.get(p.name, len(order)), groups[task_group(p.name, read_metadata(p))], p.name)

    return sorted(found, key=key)
