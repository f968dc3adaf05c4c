"""Where the learned information sits: the online probe's linear protocol on
each stage of the encoder, trained against random weights.

    python -m eval.probes.layer_probe --model trained.pt --model random.pt --tasks TASK_DIR [TASK_DIR ...] [--json F]

The HEAR embedding of AudioNTT concatenates its conv output ("conv2", 1024-d
per 40 ms frame) with the MLP's output ("fc2", 2048-d). A checkpoint can beat
random weights in one stage and lose in another: Barlow Twins shapes the last
stage most (it feeds the projector), and augmentation invariances such as
frequency scaling show there first. For each readout, every clip's frame
features are pooled as the scene embedding is (temporal mean + max) and
probed exactly as `python -m hear_abt.train.probe` does (docs/training_probe.md).

Readouts: "logmel" (the normalised input, the same for any weights), "conv1"
(first conv block, 2048-d), "conv2", "fc1" (the MLP's hidden layer), "fc2",
"embedding" (conv2 + fc2: the scene embedding of the HEAR API, computed
here through the training graph, equal to it up to float rounding), and
"conv2+fc1" (an embedding of the same width that skips the last stage).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from hear_abt.embed import logmel_range, padded_to_one_frame, pool_clip
from hear_abt.hear_api import load_model
from hear_abt.model import ABTModel
from hear_abt.train.probe import ProbeTask, equal_length_batches, load_tasks, score_task

READOUTS = ("logmel", "conv1", "conv2", "fc1", "fc2", "embedding", "conv2+fc1")


@torch.no_grad()
def readout_features(model: ABTModel, audio: torch.Tensor) -> dict[str, torch.Tensor]:
    """[n, samples] of equal length -> readout -> pooled features [n, D] (float64)."""
    audio = padded_to_one_frame(model, audio)
    mel = logmel_range(model.frontend, audio, 0, model.frontend.cfg.n_frames(audio.shape[-1]))  # [n, M, T]
    x = ((mel - model.norm_mean) / model.norm_std).unsqueeze(1)
    stages = model.encoder.readouts(x)
    out = {"logmel": pool_clip(x[:, 0].transpose(1, 2))}
    out.update({k: pool_clip(v) for k, v in stages.items()})
    out["embedding"] = torch.cat([out["conv2"], out["fc2"]], dim=1)
    out["conv2+fc1"] = torch.cat([out["conv2"], out["fc1"]], dim=1)
    return {k: v.double().cpu() for k, v in out.items()}


def task_features(model: ABTModel, task: ProbeTask) -> dict[str, dict[str, torch.Tensor]]:
    """readout -> split -> [clips, D], clips in the task's order."""
    per_split: dict[str, dict[str, torch.Tensor]] = {}
    for split, (wavs, _) in task.splits.items():
        rows: list[dict[str, torch.Tensor] | None] = [None] * len(wavs)
        for sel in equal_length_batches(wavs):
            feats = readout_features(model, torch.stack([wavs[i] for i in sel]).float().to(model.device))
            for j, i in enumerate(sel):
                rows[i] = {k: v[j] for k, v in feats.items()}
        per_split[split] = {k: torch.stack([r[k] for r in rows]) for k in READOUTS}  # type: ignore[index]
    return {k: {s: per_split[s][k] for s in per_split} for k in READOUTS}


def probe_readouts(model: ABTModel, tasks: Sequence[ProbeTask]) -> dict[str, dict[str, float]]:
    """readout -> {task name: accuracy, ..., "mean": ...}."""
    if not hasattr(model.encoder, "readouts"):
        raise SystemExit(f"layer readouts are defined for AudioNTT only, not {type(model.encoder).__name__}")
    model.eval()
    scores: dict[str, dict[str, float]] = {k: {} for k in READOUTS}
    for t in tasks:
        for k, feats in task_features(model, t).items():
            scores[k][t.name] = score_task(t, feats)
    for row in scores.values():
        row["mean"] = sum(row[t.name] for t in tasks) / len(tasks)
    return scores


def table(results: dict[str, dict[str, dict[str, float]]], tasks: Sequence[ProbeTask]) -> str:
    names = [t.name for t in tasks]
    lines = ["| model | readout | " + " | ".join(names) + " | mean |", "|---|---|" + "---|" * (len(names) + 1)]
    for model, rows in results.items():
        for readout, row in rows.items():
            lines.append(f"| {model} | {readout} | " + " | ".join(f"{row[n]:.3f}" for n in [*names, "mean"]) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, metavar="CKPT", help="a hear-abt checkpoint (repeatable)")
    p.add_argument("--tasks", nargs="+", required=True, metavar="DIR", help="HEAR-format multiclass scene task folders")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="also write the scores here")
    args = p.parse_args(argv)
    for path in args.model:
        if not Path(path).is_file():
            p.error(f"--model {path}: no such file")
    tasks = load_tasks(args.tasks)
    results = {}
    for path in args.model:
        start = time.perf_counter()
        results[path] = probe_readouts(load_model(path).to(args.device), tasks)
        print(f"{path}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    print(table(results, tasks))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
