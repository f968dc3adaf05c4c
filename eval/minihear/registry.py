"""All mini-HEAR tasks, in card order (speech, environment, music, event)."""
from __future__ import annotations

from eval.minihear import environment, music, realtasks, speech
from eval.minihear.task import Task

_REAL = {t.name: t for t in realtasks.TASKS}
TASKS: dict[str, Task] = {t.name: t for t in [
    *speech.TASKS, _REAL["asterisk_digits"], _REAL["fillets_speaker"], *environment.TASKS[:2],
    *music.TASKS, _REAL["game_soundtrack"], environment.TASKS[2]]}


def small_tasks() -> list[str]:
    """Tasks the --small suite builds: those that need only the packages install_apt.sh installs."""
    return [n for n, t in TASKS.items() if not t.heavy]
