"""A short content fingerprint of a HEAR task folder, stored with every score.

Why: a task folder keeps its name when the code that builds it changes. The
mini-HEAR real-audio tasks were retuned (milder augmentation for
asterisk_digits, 1 s crops with more noise for fillets_speaker) after their
first build had been scored, and the scores made on the first build stayed
beside scores made on the second under the same task name (docs/experiments/retraining.md,
"Which builds of the real-audio tasks were scored"). With a fingerprint in
scores.json, eval/driver/run.py refuses to resume a tag on a changed task, and
eval/driver/leaderboard.py names the tasks whose runs saw different builds.

What it hashes (task cards, ``*.md``, are left out: they describe the task
and change with the baseline's run): every other file's path and size, the full bytes of every file that
is not audio (metadata, splits, labels), and the full bytes of up to
``AUDIO_SAMPLE`` audio files taken evenly from the sorted list. A rebuild that
changes clips in place (same names, same lengths) therefore shows unless it
touches none of the sampled clips; the cost stays bounded on the full HEAR
2021 tasks (tens of GB).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

AUDIO_SAMPLE = 64
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus"}
_CHUNK = 1 << 20


def _hash_file(h: hashlib._Hash, path: Path) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)


def file_sha256(path: Path) -> str:
    """SHA-256 of one file's bytes (e.g. the model a tag embedded with)."""
    h = hashlib.sha256()
    _hash_file(h, path)
    return h.hexdigest()


def task_fingerprint(task_dir: Path, audio_sample: int = AUDIO_SAMPLE) -> str:
    """16 hex digits of SHA-256 over the folder as described above."""
    task_dir = Path(task_dir)
    if not task_dir.is_dir():
        raise FileNotFoundError(f"task folder {task_dir} does not exist")
    files = sorted(p for p in task_dir.rglob("*") if p.is_file() and p.suffix.lower() != ".md")
    audio = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
    if audio_sample > 0 and len(audio) > audio_sample:
        step = len(audio) / audio_sample
        sampled = {audio[int(i * step)] for i in range(audio_sample)}
    else:
        sampled = set(audio)
    h = hashlib.sha256()
    for p in files:
        rel = p.relative_to(task_dir).as_posix()
        h.update(f"{rel}\0{p.stat().st_size}\0".encode())
        if p.suffix.lower() not in AUDIO_SUFFIXES or p in sampled:
            _hash_file(h, p)
    return h.hexdigest()[:16]
