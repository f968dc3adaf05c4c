"""A task folder's content fingerprint, the driver's refusal to resume a tag on
a rebuilt task, and the leaderboard's note on scores from different builds."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import helpers
import pytest

from eval.driver import leaderboard, scores
from eval.driver import run as eval_run
from eval.driver.task_fingerprint import task_fingerprint


@pytest.fixture(scope="module")
def scene_task(tmp_path_factory) -> Path:
    return helpers.make_scene_task(tmp_path_factory.mktemp("fp"))


def _copy(task: Path, dest: Path) -> Path:
    return Path(shutil.copytree(task, dest / task.name))


def _rewrite_in_place(clip: Path) -> None:
    """Same name, same size, different bytes (what a retuned build does to a clip)."""
    data = bytearray(clip.read_bytes())
    data[-4:] = bytes(b ^ 0xFF for b in data[-4:])
    clip.write_bytes(bytes(data))


def test_a_copy_and_an_edited_card_keep_the_fingerprint(scene_task, tmp_path):
    copy = _copy(scene_task, tmp_path)
    fp = task_fingerprint(scene_task)
    assert len(fp) == 16 and task_fingerprint(copy) == fp
    (copy / "CARD.md").write_text("a task card that changed with the baseline's run")
    assert task_fingerprint(copy) == fp


def test_a_clip_or_a_label_changed_in_place_changes_it(scene_task, tmp_path):
    fp = task_fingerprint(scene_task)
    clip_copy = _copy(scene_task, tmp_path / "a")
    clips = sorted(clip_copy.rglob("*.wav"))
    size = clips[5].stat().st_size
    _rewrite_in_place(clips[5])
    assert clips[5].stat().st_size == size and task_fingerprint(clip_copy) != fp

    label_copy = _copy(scene_task, tmp_path / "b")
    split = json.loads((label_copy / "fold00.json").read_text())
    first = next(iter(split))
    split[first] = ["high" if split[first] != ["high"] else "low"]
    (label_copy / "fold00.json").write_text(json.dumps(split))
    assert task_fingerprint(label_copy) != fp


def test_only_sampled_clips_are_read_in_full(scene_task, tmp_path):
    """The documented trade-off: with a sample of 4 clips, a clip outside the
    sample changed in place goes unseen; one inside it does not."""
    copy = _copy(scene_task, tmp_path)
    clips = sorted(copy.rglob("*.wav"))
    fp = task_fingerprint(copy, audio_sample=4)
    step = len(clips) / 4
    sampled = {int(i * step) for i in range(4)}
    _rewrite_in_place(clips[next(i for i in range(len(clips)) if i not in sampled)])
    assert task_fingerprint(copy, audio_sample=4) == fp
    _rewrite_in_place(clips[0])
    assert task_fingerprint(copy, audio_sample=4) != fp


def test_the_driver_refuses_a_tag_whose_task_was_rebuilt(scene_task, tmp_path):
    copy = _copy(scene_task, tmp_path)
    stored = {"other_task": "0123456789abcdef"}
    now = eval_run.fingerprints_or_exit(stored, [copy], "abt")
    assert now == {"other_task": "0123456789abcdef", copy.name: task_fingerprint(copy)}
    assert eval_run.fingerprints_or_exit(now, [copy], "abt") == now  # unchanged: resumes
    _rewrite_in_place(sorted(copy.rglob("*.wav"))[0])
    with pytest.raises(SystemExit, match=rf"abt: task folders changed .*{copy.name}"):
        eval_run.fingerprints_or_exit(now, [copy], "abt")


def _write_run(results: Path, tag: str, values: dict[str, float], fingerprints: dict[str, str]) -> None:
    tasks = {f: {"metric": "top1_acc", "mean": v, "std": None, "folds": {"test": v}, "group": "env",
                 "paper_key": None} for f, v in values.items()}
    scores.write_scores(results / tag / "scores.json",
                        {"tag": tag, "module": "m", "model": None, "model_options": {}, "grid": "fast",
                         "grid_points": 1, "timing_s": {}, "task_fingerprints": fingerprints}, tasks)


def test_the_leaderboard_names_tasks_scored_on_different_builds(tmp_path):
    _write_run(tmp_path, "old", {"asterisk_digits": 0.3, "mini_esc50": 0.9},
               {"asterisk_digits": "aaaa", "mini_esc50": "eeee"})
    _write_run(tmp_path, "new", {"asterisk_digits": 0.4, "mini_esc50": 0.9},
               {"asterisk_digits": "bbbb", "mini_esc50": "eeee"})
    _write_run(tmp_path, "unknown", {"asterisk_digits": 0.35}, {})  # no fingerprint recorded: not a conflict
    runs = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/scores.json"))]
    assert leaderboard.build_conflicts(runs) == {"asterisk_digits": {"aaaa": ["old"], "bbbb": ["new"]}}
    assert leaderboard.main(["--results-dir", str(tmp_path)]) == 0
    md = (tmp_path / "leaderboard.md").read_text()
    assert "## Different builds of one task" in md
    assert "- **asterisk_digits**: `aaaa`: old; `bbbb`: new" in md and "mini_esc50**" not in md
    _write_run(tmp_path, "new", {"asterisk_digits": 0.4}, {"asterisk_digits": "aaaa"})
    assert leaderboard.main(["--results-dir", str(tmp_path)]) == 0
    assert "Different builds" not in (tmp_path / "leaderboard.md").read_text()
