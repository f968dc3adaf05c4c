"""Collect heareval's test scores for one tag into ``scores.json``.

Why: heareval writes one ``test.predicted-scores.json`` per task, keyed by
test fold ("test" for train/valid/test tasks, "fold00", ... for k-fold tasks),
each fold's primary score under ``test_score`` (the task's first evaluation
metric). The leaderboard needs one number per task and its spread, so we take
the mean and sample std (ddof=1, as heareval's own ``aggregated_scores``)
over folds. A NaN score (e.g. onset F-measure when no event was predicted)
is kept as ``null``, never turned into 0.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from eval.driver.hear_tasks import paper_key, read_metadata, task_group

SCORES_FILE = "test.predicted-scores.json"


def _finite_or_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) or math.isinf(x) else float(x)


def task_score(pred_dir: Path) -> dict | None:
    """Mean/std over folds of the primary test score of one finished task."""
    path = Path(pred_dir) / SCORES_FILE
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    folds = {k: v["test_score"] for k, v in raw.items() if isinstance(v, dict) and "test_score" in v}
    values = [float(v) for v in folds.values()]
    finite = [v for v in values if not math.isnan(v)]
    metadata = read_metadata(pred_dir)
    return {
        "metric": (metadata.get("evaluation") or ["?"])[0],
        "mean": _finite_or_none(statistics.fmean(finite)) if len(finite) == len(values) and values else None,
        "std": _finite_or_none(statistics.stdev(finite)) if len(finite) == len(values) and len(values) > 1 else None,
        "folds": {k: _finite_or_none(float(v)) for k, v in folds.items()},
    }


def collect(embeddings_root: Path, tasks: list[Path]) -> dict[str, dict]:
    """Scores for every task in ``tasks`` that heareval has finished."""
    out = {}
    for task_dir in tasks:
        hits = sorted(Path(embeddings_root).glob(f"*/{task_dir.name}/{SCORES_FILE}"))
        if not hits:
            continue
        score = task_score(hits[-1].parent)
        metadata = read_metadata(task_dir)
        score.update(group=task_group(task_dir.name, metadata), paper_key=paper_key(task_dir.name))
        out[task_dir.name] = score
    return out


def write_scores(path: Path, header: dict, tasks: dict[str, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**header, "tasks": tasks}, indent=2, sort_keys=False))
    tmp.replace(path)
