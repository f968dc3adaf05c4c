"""A simple log-mel baseline and chance level for every mini task.

Scene tasks: mean and standard deviation over time of the log-mel
(hear_abt.frontend, the model's own frontend) -> standardised -> logistic
regression (one-vs-rest for multilabel), trained on train + valid (on the other
folds for k-fold tasks) and scored on test with the task's first metric.
Event task: the same linear probe per 50 ms frame on a +-100 ms log-mel context
(window mean and the later-minus-earlier difference), thresholded at 0.5,
median-filtered over 250 ms, runs shorter than 125 ms dropped, scored by
micro onset F-measure with a 200 ms collar (what sed_eval's
event_onset_200ms_fms computes, with the same optimal matching; equality is
tested in tests/test_onset_metric.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from eval.minihear.task import Task

HOP_FRAMES = 5      # 50 ms event frames (10 ms log-mel hop)
CONTEXT = 10        # +-100 ms


def _logmels(paths: list[Path]) -> list[np.ndarray]:
    import soundfile as sf
    import torch

    from hear_abt.frontend import LogMel, MelConfig

    mel = LogMel(MelConfig())
    out = []
    with torch.no_grad():
        for i in range(0, len(paths), 64):
            wavs = [sf.read(str(p), dtype="float32")[0] for p in paths[i : i + 64]]
            out += list(mel(torch.from_numpy(np.stack(wavs))).numpy())
    return out


def _probe():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5))


def _scene_split(task_dir: Path, split: str) -> tuple[np.ndarray, list[list[str]]]:
    data = json.loads((task_dir / f"{split}.json").read_text())
    files = sorted(data)
    mels = _logmels([task_dir / "16000" / split / f for f in files])
    x = np.stack([np.concatenate([m.mean(1), m.std(1)]) for m in mels])
    return x, [data[f] for f in files]


def _scene_score(task: Task, xtr, ytr, xte, yte) -> tuple[float, float]:
    """(baseline, chance) with the task's primary metric."""
    if task.prediction_type == "multiclass":
        clf = _probe().fit(xtr, [y[0] for y in ytr])
        truth = np.array([y[0] for y in yte])
        acc = float(np.mean(clf.predict(xte) == truth))
        _, counts = np.unique(truth, return_counts=True)
        return acc, float(counts.max() / counts.sum())
    from sklearn.metrics import average_precision_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    mlb = MultiLabelBinarizer(classes=task.labels)
    ytr_b, yte_b = mlb.fit_transform(ytr), mlb.transform(yte)
    clf = OneVsRestClassifier(_probe()).fit(xtr, ytr_b)
    keep = yte_b.sum(0) > 0
    score = float(average_precision_score(yte_b[:, keep], clf.predict_proba(xte)[:, keep], average="macro"))
    return score, float(yte_b[:, keep].mean())  # a constant score gives AP = prevalence


def score_scene(task: Task, task_dir: Path, features: Callable[[str], tuple] | None = None) -> tuple[float, float]:
    """features(split) -> (x, labels) replaces the log-mel statistics, so the
    same probe scores any model's embeddings (eval/probes/linear_probe.py)."""
    features = features or (lambda split: _scene_split(task_dir, split))
    if task.split_mode == "trainvaltest":
        parts = {s: features(s) for s in ["train", "valid", "test"]}
        xtr = np.concatenate([parts["train"][0], parts["valid"][0]])
        return _scene_score(task, xtr, parts["train"][1] + parts["valid"][1], *parts["test"])
    folds = {s: features(s) for s in task.splits}
    res = []
    for test in task.splits:
        rest = [s for s in task.splits if s != test]
        xtr = np.concatenate([folds[s][0] for s in rest])
        res.append(_scene_score(task, xtr, sum((folds[s][1] for s in rest), []), *folds[test]))
    return float(np.mean([r[0] for r in res])), float(np.mean([r[1] for r in res]))


# ---------------------------------------------------------------- event task

def _event_frames(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n_frames, 128] features and their centre times (ms) for one log-mel [64, T]."""
    t = m.shape[1]
    centres = np.arange(0, t, HOP_FRAMES)
    pad = np.pad(m, ((0, 0), (CONTEXT, CONTEXT)), mode="edge")
    feats = []
    for c in centres:
        w = pad[:, c : c + 2 * CONTEXT + 1]
        feats.append(np.concatenate([w.mean(1), w[:, CONTEXT + 1 :].mean(1) - w[:, :CONTEXT].mean(1)]))
    return np.stack(feats), centres * 10.0


def _frame_targets(events: list[dict], times: np.ndarray, labels: list[str]) -> np.ndarray:
    y = np.zeros((times.size, len(labels)), np.int64)
    for e in events:
        y[(times >= e["start"]) & (times <= e["end"]), labels.index(e["label"])] = 1
    return y


def onset_f(ref: dict[str, list[dict]], est: dict[str, list[dict]], collar_ms: float = 200.0) -> float:
    """Micro onset-only F-measure, equal to sed_eval's event_onset_200ms_fms.

    Per file, an estimate can match a reference of the same label whose onset
    is within the collar (compared in seconds, as sed_eval does); the matched
    pairs are a maximum matching (sed_eval's default 'optimal' matching), not
    a greedy one, which can miss matches when collars overlap.
    """
    from scipy.optimize import linear_sum_assignment

    collar_s = collar_ms / 1000
    tp = n_ref = n_est = 0
    for f, refs in ref.items():
        ests = est.get(f, [])
        n_ref, n_est = n_ref + len(refs), n_est + len(ests)
        if not refs or not ests:
            continue
        hit = np.array([[r["label"] == e["label"] and abs(r["start"] / 1000 - e["start"] / 1000) <= collar_s
                         for e in ests] for r in refs])
        rows, cols = linear_sum_assignment(hit, maximize=True)  # 0/1 weights: a maximum matching
        tp += int(hit[rows, cols].sum())
    return 0.0 if tp == 0 else 2 * tp / (n_ref + n_est)


def _decode(prob: np.ndarray, times: np.ndarray, labels: list[str]) -> list[dict]:
    from scipy.ndimage import median_filter

    events = []
    for k, lab in enumerate(labels):
        on = median_filter((prob[:, k] > 0.5).astype(np.int8), size=5, mode="nearest")
        edges = np.flatnonzero(np.diff(np.concatenate([[0], on, [0]])))
        for s, e in zip(edges[::2], edges[1::2]):
            if (e - s) * HOP_FRAMES * 10 >= 125:
                events.append({"label": lab, "start": float(times[s]), "end": float(times[e - 1])})
    return events


def score_event(task: Task, task_dir: Path, seed: int = 0) -> tuple[float, float]:
    from sklearn.multiclass import OneVsRestClassifier

    labels = task.labels
    data = {s: json.loads((task_dir / f"{s}.json").read_text()) for s in ["train", "valid", "test"]}
    xs, ys = [], []
    for s in ["train", "valid"]:
        files = sorted(data[s])
        for f, m in zip(files, _logmels([task_dir / "16000" / s / f for f in files])):
            x, t = _event_frames(m)
            xs.append(x)
            ys.append(_frame_targets(data[s][f], t, labels))
    clf = OneVsRestClassifier(_probe()).fit(np.concatenate(xs), np.concatenate(ys))
    files = sorted(data["test"])
    est = {}
    for f, m in zip(files, _logmels([task_dir / "16000" / "test" / f for f in files])):
        x, t = _event_frames(m)
        est[f] = _decode(clf.predict_proba(x), t, labels)
    score = onset_f(data["test"], est)
    # Chance: the right number of events per file, labels from the training prior, onsets uniform in the clip.
    rng = np.random.default_rng(seed)
    prior = [e["label"] for evs in data["train"].values() for e in evs]
    dur_ms = task.sample_duration * 1000
    chance = np.mean([
        onset_f(data["test"], {f: [{"label": str(rng.choice(prior)), "start": float(rng.uniform(0, dur_ms))}
                                   for _ in evs] for f, evs in data["test"].items()})
        for _ in range(20)
    ])
    return score, float(chance)


def score(task: Task, task_dir: Path, seed: int = 0) -> tuple[float, float]:
    """(log-mel baseline, chance) on the task's primary metric."""
    if task.embedding_type == "event":
        return score_event(task, task_dir, seed)
    return score_scene(task, task_dir)
