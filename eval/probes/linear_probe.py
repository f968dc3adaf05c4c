"""A linear probe on the scene embeddings heareval saved: a second protocol
beside heareval's MLP, for the mini-HEAR tasks.

    python -m eval.probes.linear_probe --tasks-dir tasks TAG [TAG ...] [--logmel] [--random-tag TAG] [--out F]

For each tag (a run of eval/driver/run.py) and each mini-HEAR scene task it embedded,
it fits the probe of the task cards' log-mel baseline (standardised features,
logistic regression, C = 0.5; train + valid -> test, or leave-one-fold-out)
on the per-clip embeddings in eval/results/TAG/work/embeddings/ and prints a
markdown table; --logmel adds the cards' log-mel baseline as a row (the same
probe on the mean and std over time of each clip's log-mel). A linear probe
asks whether the classes are linearly separable in the embedding; heareval's
MLP with a hyperparameter grid can hide differences between embeddings that
a small nonlinear classifier can undo.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from eval.driver.leaderboard import mean_gain, mean_gap_closed
from eval.minihear.baseline import score_scene
from eval.minihear.registry import TASKS

EVAL_DIR = Path(__file__).resolve().parents[1]

TASK_BY_FOLDER = {t.folder: t for t in TASKS.values()}


def heareval_features(task_dir: Path, emb_dir: Path) -> Callable[[str], tuple[np.ndarray, list]]:
    """split -> (one embedding per clip, its labels), in the task's file order."""
    def features(split: str) -> tuple[np.ndarray, list]:
        labels = json.loads((task_dir / f"{split}.json").read_text())
        files = sorted(labels)
        x = np.stack([np.load(emb_dir / split / f"{f}.embedding.npy") for f in files])
        return x, [labels[f] for f in files]

    return features


def probe_scores(tasks_dir: Path, results_dir: Path, tag: str) -> dict[str, float]:
    out = {}
    for emb_dir in sorted((results_dir / tag / "work" / "embeddings").glob("*/*")):
        task = TASK_BY_FOLDER.get(emb_dir.name)
        if task is None or task.embedding_type != "scene":
            continue
        task_dir = tasks_dir / emb_dir.name
        out[emb_dir.name] = score_scene(task, task_dir, heareval_features(task_dir, emb_dir))[0]
    return out


def logmel_scores(tasks_dir: Path, folders: Sequence[str]) -> dict[str, float]:
    return {f: score_scene(TASK_BY_FOLDER[f], tasks_dir / f)[0] for f in folders}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tags", nargs="+")
    p.add_argument("--tasks-dir", type=Path, required=True)
    p.add_argument("--results-dir", type=Path, default=EVAL_DIR / "results")
    p.add_argument("--logmel", action="store_true", help="add the log-mel mean+std baseline row")
    p.add_argument("--json", type=Path, help="also write the scores here")
    p.add_argument("--random-tag", help="add the mean per-task relative gain over this tag (%%↑RAND)")
    p.add_argument("--out", type=Path, help="also write the markdown table here")
    args = p.parse_args(argv)
    table = {tag: probe_scores(args.tasks_dir, args.results_dir, tag) for tag in args.tags}
    folders = sorted({f for scores in table.values() for f in scores})
    if not folders:
        print("no scene-task embeddings found under the given tags", file=sys.stderr)
        return 2
    if args.logmel:
        table["log-mel mean+std"] = logmel_scores(args.tasks_dir, folders)
    rand = table.get(args.random_tag) if args.random_tag else None
    if args.random_tag and rand is None:
        p.error(f"--random-tag {args.random_tag} is not among the tags")
    lines = ["| model | " + " | ".join(f.split("-")[0] for f in folders) + " | mean |" + (" mean %↑RAND | mean gap closed |" if rand else "")]
    lines.append("|---" * (len(folders) + 2 + 2 * bool(rand)) + "|")
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    for tag, scores in table.items():
        cells = [scores.get(f) for f in folders]
        mean = float(np.mean(cells)) if None not in cells else None
        row = f"| {tag} | " + " | ".join(map(fmt, cells)) + f" | {fmt(mean)} |"
        if rand:
            pairs = [(scores.get(f), rand.get(f)) for f in folders]
            gain, gap = mean_gain(pairs), mean_gap_closed(pairs)
            row += "".join(" — |" if v is None else f" {v:+.1f}% |" for v in (gain, gap))
        lines.append(row)
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
