"""A cheap quality probe on HEAR-format scene tasks: online during training,
or standalone on checkpoints.

    python -m hear_abt.train.probe --model ckpt.pt [--model random.pt ...] --tasks DIR1 DIR2

Protocol (the mini-HEAR cards' log-mel baseline, applied to scene embeddings):
clip embeddings from the HEAR API's own path (hear_abt.get_scene_embeddings:
same frontend, norm stats and mean + max pooling), standardised with the
training part's statistics, then an L2-regularised multinomial logistic
regression (C = 0.5, as the cards' sklearn probe; fitted here with LBFGS in
float64 so the package needs no scikit-learn). Train + valid -> test for
train/valid/test tasks; leave-one-fold-out, averaged, for k-fold tasks. The
score is top-1 accuracy. Only multiclass scene tasks are probed: event tasks
and multilabel tasks are skipped with a log line (their metrics, onset
F-measure and mAP, need more than a cheap linear probe to be meaningful).

Online, the probe must not change training: the encoder runs in eval mode
under no_grad (BatchNorm running statistics untouched), every module's
train/eval flag is restored afterwards, and the global RNG states are forked
(tests/test_train_probe.py checks a run with the probe ends bitwise equal to one
without). Each task's audio is decoded once per run and kept in memory.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import DataError, HearAbtError

log = logging.getLogger(__name__)

C_REG = 0.5  # inverse L2 strength, as the cards' probe (eval/minihear/baseline.py)
BATCH = 32  # clips per embedding call
MAX_ITER = 300  # LBFGS iterations per fit: the test predictions are settled long before (measured on mini-HEAR)
SAMPLE_RATE = 16000


@dataclass
class ProbeTask:
    """One task's decoded audio, grouped by split: split -> (waveforms, label ids)."""

    name: str
    folder: Path
    labels: list[str]
    split_mode: str  # "trainvaltest" or k-fold
    splits: dict[str, tuple[list[torch.Tensor], list[int]]]

    @property
    def n_clips(self) -> int:
        return sum(len(w) for w, _ in self.splits.values())

    @property
    def chance(self) -> float:
        """Majority-class share of the test part(s): what a constant guess scores."""
        parts = [y for (_, y) in self._test_parts()]
        return sum(max(map(ys.count, set(ys))) / len(ys) for ys in parts) / len(parts)

    def _test_parts(self) -> list[tuple[list, list[int]]]:
        if "test" in self.splits and self.split_mode == "trainvaltest":
            return [self.splits["test"]]
        return list(self.splits.values())


class ProbeSkip(Exception):
    """A task folder the probe cannot score (event or multilabel task)."""


def load_task(folder: str | Path) -> ProbeTask:
    """Decode a hearpreprocess task folder (16000/<split>/*.wav preferred; any
    other rate folder is resampled). Raises DataError for a folder that is not
    a task, ProbeSkip for a task the probe does not score."""
    from ..audio_io import read_audio

    folder = Path(folder)
    meta_path = folder / "task_metadata.json"
    if not meta_path.is_file():
        raise DataError(f"probe task {folder}: no task_metadata.json (expected a hearpreprocess task folder)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    name = str(meta.get("task_name", folder.name))
    if meta.get("embedding_type") != "scene":
        raise ProbeSkip(f"{name}: {meta.get('embedding_type')} task (the probe scores scene tasks only)")
    if meta.get("prediction_type") != "multiclass":
        raise ProbeSkip(f"{name}: {meta.get('prediction_type')} task (the probe scores multiclass tasks only)")
    with (folder / "labelvocabulary.csv").open(newline="", encoding="utf-8") as f:
        labels = [row["label"] for row in csv.DictReader(f)]
    split_mode = str(meta.get("split_mode", "trainvaltest"))
    names = [s["name"] if isinstance(s, dict) else str(s) for s in meta.get("splits") or []]
    if not names:  # no list in the metadata: every <split>.json beside it
        names = sorted(p.stem for p in folder.glob("*.json") if p.name != "task_metadata.json")
    rates = sorted((int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda r: (r != SAMPLE_RATE, r))
    if not rates:
        raise DataError(f"probe task {folder}: no audio folder (expected {folder}/{SAMPLE_RATE}/<split>/)")
    audio_dir = folder / str(rates[0])
    splits = {}
    for split in names:
        if not (folder / f"{split}.json").is_file():
            raise DataError(f"probe task {folder}: split {split!r} has no {split}.json")
        targets = json.loads((folder / f"{split}.json").read_text(encoding="utf-8"))
        wavs, ys = [], []
        for f in sorted(targets):
            lab = targets[f]
            lab = lab[0] if isinstance(lab, list) else lab
            if lab not in labels:
                raise DataError(f"probe task {folder}: {split}.json labels {f} {lab!r}, not in labelvocabulary.csv")
            wavs.append(read_audio(audio_dir / split / f, SAMPLE_RATE)[0])
            ys.append(labels.index(lab))
        if not wavs:
            raise DataError(f"probe task {folder}: split {split} holds no clips")
        splits[split] = (wavs, ys)
    if split_mode == "trainvaltest" and not {"train", "test"} <= splits.keys():
        raise DataError(f"probe task {folder}: a trainvaltest task needs train.json and test.json, has {sorted(splits)}")
    if split_mode != "trainvaltest" and len(splits) < 2:
        raise DataError(f"probe task {folder}: a k-fold task needs at least 2 folds, has {sorted(splits)}")
    return ProbeTask(name, folder, labels, split_mode, splits)


def load_tasks(folders: Sequence[str | Path]) -> list[ProbeTask]:
    """The scorable tasks among folders (skips logged); DataError if none is."""
    tasks = []
    for f in folders:
        try:
            tasks.append(load_task(f))
        except ProbeSkip as e:
            log.warning("probe: skipping %s", e)
    if not tasks:
        raise DataError(f"probe: none of {list(map(str, folders))} is a multiclass scene task")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise DataError(f"probe: two task folders share a task name: {names}")
    return tasks


def equal_length_batches(wavs: Sequence[torch.Tensor]) -> Iterator[list[int]]:
    """Indices of up to BATCH clips of one length at a time, every clip once:
    clips can only be stacked into one batch when their lengths agree."""
    by_len: dict[int, list[int]] = {}
    for i, w in enumerate(wavs):
        by_len.setdefault(w.shape[-1], []).append(i)
    for idx in by_len.values():
        for a in range(0, len(idx), BATCH):
            yield idx[a : a + BATCH]


def embed_clips(model: nn.Module, wavs: list[torch.Tensor]) -> torch.Tensor:
    """Scene embeddings [n, D] (float64, CPU) through the HEAR API, batching
    clips of equal length."""
    from ..hear_api import get_scene_embeddings

    out: list[torch.Tensor | None] = [None] * len(wavs)
    for sel in equal_length_batches(wavs):
        x = torch.stack([wavs[i] for i in sel]).to(model.device)
        for i, e in zip(sel, get_scene_embeddings(x, model).double().cpu()):
            out[i] = e
    return torch.stack(out)  # type: ignore[arg-type]


def fit_predict(xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Standardise on train, fit an L2 multinomial logistic regression, predict xte.

    Objective (sklearn's, divided by C): sum of cross-entropies + ||W||^2 / (2 C);
    strongly convex, so LBFGS reaches the same optimum from zero every time.
    With fewer clips than dimensions the optimal W lies in the row space of
    the training features (the loss gradient is X^T G), so the fit runs on the
    thin-SVD coordinates X V (n x rank): the same optimum, ~D/n times cheaper."""
    mean, std = xtr.mean(0), xtr.std(0, unbiased=False)
    std = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))  # constant features: as StandardScaler
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    if xtr.shape[0] < xtr.shape[1]:
        _, sv, vh = torch.linalg.svd(xtr, full_matrices=False)
        v = vh[sv > sv[0] * 1e-10].T  # [D, rank]: an orthonormal basis of the row space
        xtr, xte = xtr @ v, xte @ v  # ||W||^2 = ||V^T W||^2 for W in the row space
    w = torch.zeros(xtr.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=MAX_ITER, tolerance_grad=1e-6, tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(xtr @ w + b, ytr, reduction="sum") + w.pow(2).sum() / (2 * C_REG)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return (xte @ w + b).argmax(1)


def score_task(task: ProbeTask, feats: dict[str, torch.Tensor]) -> float:
    """Top-1 accuracy: train (+ valid) -> test, or leave-one-fold-out mean."""
    y = {s: torch.tensor(ys) for s, (_, ys) in task.splits.items()}
    k = len(task.labels)
    if task.split_mode == "trainvaltest":
        fit = [s for s in ("train", "valid") if s in feats]
        pred = fit_predict(torch.cat([feats[s] for s in fit]), torch.cat([y[s] for s in fit]), feats["test"], k)
        return float((pred == y["test"]).double().mean())
    accs = []
    for test in feats:
        rest = [s for s in feats if s != test]
        pred = fit_predict(torch.cat([feats[s] for s in rest]), torch.cat([y[s] for s in rest]), feats[test], k)
        accs.append(float((pred == y[test]).double().mean()))
    return sum(accs) / len(accs)


def probe_model(model: nn.Module, tasks: Sequence[ProbeTask]) -> dict[str, float]:
    """{task name: accuracy, ..., "mean": mean accuracy} for a HEAR model."""
    scores = {}
    for t in tasks:
        feats = {s: embed_clips(model, wavs) for s, (wavs, _) in t.splits.items()}
        scores[t.name] = score_task(t, feats)
    scores["mean"] = sum(scores[t.name] for t in tasks) / len(tasks)
    return scores


class OnlineProbe:
    """The probe inside the training loop: scores the live encoder (shared,
    not copied) through an ABTModel shell with the run's mel config and norm
    stats, leaving training exactly as it was."""

    def __init__(self, folders: Sequence[str | Path], encoder: nn.Module, encoder_name: str,
                 encoder_kwargs: dict, mel, norm_stats: tuple[float, float]):
        from ..model import ABTModel

        t0 = time.perf_counter()
        self.tasks = load_tasks(folders)
        self.encoder = encoder
        device = next(encoder.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            shell = ABTModel(encoder_name, encoder_kwargs, mel, norm_stats)  # builds (and drops) a fresh encoder
        shell.encoder = encoder
        self.shell = shell
        self.shell.frontend.to(device)
        log.info("probe: %s decoded in %.1f s", ", ".join(f"{t.name} ({t.n_clips} clips)" for t in self.tasks),
                 time.perf_counter() - t0)

    @property
    def columns(self) -> list[str]:
        return [f"probe_{t.name}" for t in self.tasks] + ["probe_mean"]

    def __call__(self) -> dict[str, float]:
        """{column: accuracy} for the encoder's current weights, plus probe_s (seconds)."""
        t0 = time.perf_counter()
        modes = [(m, m.training) for m in self.encoder.modules()]
        device = next(self.encoder.parameters()).device
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                scores = probe_model(self.shell, self.tasks)
        finally:
            for m, was in modes:
                m.training = was
        out = {f"probe_{k}": round(v, 4) for k, v in scores.items()}
        out["probe_s"] = round(time.perf_counter() - t0, 2)
        return out


def _table(rows: dict[str, dict[str, float]], tasks: Sequence[ProbeTask]) -> str:
    cols = [t.name for t in tasks] + ["mean"]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines.append("| chance (majority class) | " + " | ".join(
        f"{v:.3f}" for v in [t.chance for t in tasks] + [sum(t.chance for t in tasks) / len(tasks)]) + " |")
    for name, s in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{s[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """`python -m hear_abt.train.probe`; a library error stops it with its message (exit status 1)."""
    try:
        return _main(argv)
    except HearAbtError as e:
        raise SystemExit(str(e)) from None


def _main(argv: Sequence[str] | None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(prog="python -m hear_abt.train.probe", description=__doc__.splitlines()[0],
                                epilog="Random weights to compare with: hear-abt init -o random.pt --stats-from ckpt.pt")
    p.add_argument("--model", action="append", required=True, metavar="CKPT", help="a hear-abt checkpoint (repeatable)")
    p.add_argument("--tasks", nargs="+", required=True, metavar="DIR", help="HEAR-format task folders")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="also write the scores here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from ..hear_api import load_model

    tasks = load_tasks(args.tasks)
    rows = {}
    for path in args.model:
        if not Path(path).is_file():
            raise DataError(f"--model {path}: no such file")
        t0 = time.perf_counter()
        rows[path] = probe_model(load_model(path).to(args.device), tasks)
        log.info("%s probed in %.1f s", path, time.perf_counter() - t0)
    print(_table(rows, tasks))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
