"""All mini-HEAR tasks, in card order (speech, environment, music, event)."""
from __future__ import annotations

from . import environment, music, speech
from .task import Task

TASKS: dict[str, Task] = {t.name: t for t in [*speech.TASKS, *environment.TASKS[:2], *music.TASKS, environment.TASKS[2]]}
