"""Check a HEAR task folder before heareval reads it.

Why: heareval meets a missing split file with a bare ``assert`` and audio at
the wrong sample rate with ``assert sr == self.sample_rate``, after minutes of
work and without naming the file. The driver checks each task first, so a
broken task fails at once with the task and the file named, and the other
tasks still run. Only file headers are read (soundfile.info), so the check
costs seconds even for the full HEAR suite.
"""
from __future__ import annotations

import json
from pathlib import Path

MAX_LISTED = 5  # problems shown per task; the rest are counted


def _read_json(path: Path, kind: type) -> tuple[object | None, str | None]:
    if not path.is_file():
        return None, f"{path} is missing"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        return None, f"{path} is corrupt: {e}"
    if not isinstance(value, kind):
        return None, f"{path} holds a {type(value).__name__}, expected a {kind.__name__}"
    return value, None


def check_task(task_dir: Path) -> list[str]:
    """Problems with a task folder, each naming the file; [] when usable.

    Checks task_metadata.json and labelvocabulary.csv, that every split the
    metadata lists has its <split>.json, and that in every <sample rate>/
    folder present each listed clip exists, is readable and has that rate."""
    import soundfile as sf

    task_dir = Path(task_dir)
    meta, err = _read_json(task_dir / "task_metadata.json", dict)
    if err:
        return [err]
    problems = []
    splits = meta.get("splits")
    if not (isinstance(splits, list) and splits and all(isinstance(s, str) for s in splits)):
        return [f"{task_dir / 'task_metadata.json'}: 'splits' must be a non-empty list of split names, got {splits!r}"]
    if meta.get("embedding_type") not in ("scene", "event"):
        problems.append(f"{task_dir / 'task_metadata.json'}: embedding_type {meta.get('embedding_type')!r} is not scene or event")
    if not (task_dir / "labelvocabulary.csv").is_file():
        problems.append(f"{task_dir / 'labelvocabulary.csv'} is missing")
    rates = sorted(int(p.name) for p in task_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not rates:
        problems.append(f"{task_dir} has no <sample rate>/ audio folder (e.g. 16000/)")
    for split in splits:
        labels, err = _read_json(task_dir / f"{split}.json", dict)
        if err:
            problems.append(err)
            continue
        for sr in rates:
            folder = task_dir / str(sr) / split
            if not folder.is_dir():
                problems.append(f"{folder} is missing (split {split!r} of the metadata)")
                continue
            for name in labels:
                path = folder / name
                try:
                    info = sf.info(str(path))
                except Exception as e:  # noqa: BLE001 - soundfile raises several types
                    problems.append(f"{path}: unreadable audio ({'missing' if not path.exists() else type(e).__name__})")
                    continue
                if info.samplerate != sr:
                    problems.append(f"{path}: sample rate {info.samplerate} Hz in the {sr} Hz folder")
    return problems


def describe(problems: list[str]) -> str:
    shown = problems[:MAX_LISTED]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more else "")
