"""Helpers shared by the test files (no test file imports another).

- Paths: the repository and its bundled example clip.
- Tiny HEAR-format tasks (the folder layout hearpreprocess produces). Why: the driver and the heareval fix must be tested end to end without the
HEAR datasets. Two tasks cover heareval's two code paths: a k-fold scene task
(multiclass, top-1 accuracy, scores averaged over folds) and a train/valid/test
event task (onset F-measure, the path that raised ``KeyError: 50``). Audio is
sine tones in noise: trivially separable, so scores are well above chance.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

SAMPLE_RATES = (16000, 44100)  # hear_abt/CREPE use 16 kHz, hearbaseline's naive 44.1 kHz


def _tone(freq: float, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def _write_audio(task_dir: Path, split: str, name: str, make) -> None:
    import soundfile as sf

    for sr in SAMPLE_RATES:
        out = task_dir / str(sr) / split
        out.mkdir(parents=True, exist_ok=True)
        sf.write(out / name, make(sr), sr, subtype="FLOAT")


# heareval draws its grid points at random: with `--grid faster --grid-points 1`
# the draw for these tasks is lr 1e-4 for 10 epochs of one step each, which
# learns nothing (scene at chance, no event predicted: no onset score). A
# task may fix its own grid (heareval reads evaluation_params.
# task_specific_param_grid over the chosen grid), so these tiny tasks train
# a one-hidden-layer MLP at a rate that learns them, and the driver test can
# ask for scores well above chance.
TINY_GRID = {"lr": [1e-2], "max_epochs": [100], "check_val_every_n_epoch": [5], "patience": [20],
             "hidden_layers": [1], "hidden_dim": [256]}


def _write_metadata(task_dir: Path, labels: list[str], **meta) -> None:
    meta["evaluation_params"] = {"task_specific_param_grid": TINY_GRID}
    (task_dir / "task_metadata.json").write_text(json.dumps(meta, indent=2))
    rows = ["idx,label"] + [f"{i},{lab}" for i, lab in enumerate(labels)]
    (task_dir / "labelvocabulary.csv").write_text("\n".join(rows) + "\n")


def make_scene_task(root: Path, clips_per_class_per_fold: int = 3, seed: int = 0) -> Path:
    """A 3-fold, 3-class scene task: which of three pitches is playing."""
    rng = np.random.default_rng(seed)
    task_dir = root / "tiny_scene-v1.0-full"
    labels = {"low": 220.0, "mid": 440.0, "high": 880.0}
    folds = ["fold00", "fold01", "fold02"]
    for fold in folds:
        split = {}
        for label, freq in labels.items():
            for k in range(clips_per_class_per_fold):
                name = f"{fold}_{label}_{k}.wav"
                f = freq * rng.uniform(0.97, 1.03)
                _write_audio(task_dir, fold, name, lambda sr, f=f: _tone(f, 1.0, sr, rng))
                split[name] = [label]
        (task_dir / f"{fold}.json").write_text(json.dumps(split))
    _write_metadata(
        task_dir, list(labels), task_name="tiny_scene", version="v1.0",
        embedding_type="scene", prediction_type="multiclass",
        split_mode="new_split_kfold", splits=folds, sample_duration=1.0,
        evaluation=["top1_acc"], mirrors_group="music",
    )
    return task_dir


def make_event_task(root: Path, clips_per_split: tuple[int, int, int] = (8, 4, 4), seed: int = 1) -> Path:
    """A train/valid/test event task: onsets of two tones in 3 s of noise."""
    rng = np.random.default_rng(seed)
    task_dir = root / "tiny_event-v1.0-full"
    labels = {"beep": 600.0, "boop": 1500.0}
    seconds = 3.0
    for split, n in zip(("train", "valid", "test"), clips_per_split):
        events_by_file = {}
        for k in range(n):
            name = f"{split}_{k}.wav"
            events = []
            for j, label in enumerate(labels):
                start = float(rng.uniform(0.1, 0.9)) + 1.5 * j
                events.append({"label": label, "start": 1000 * start, "end": 1000 * (start + 0.5)})

            def make(sr: int, events=events) -> np.ndarray:
                x = 0.02 * rng.standard_normal(int(seconds * sr)).astype(np.float32)
                for ev in events:
                    a = int(ev["start"] / 1000 * sr)
                    tone = _tone(labels[ev["label"]], 0.5, sr, rng)
                    x[a : a + tone.size] += tone
                return x

            _write_audio(task_dir, split, name, make)
            events_by_file[name] = events
        (task_dir / f"{split}.json").write_text(json.dumps(events_by_file))
    _write_metadata(
        task_dir, list(labels), task_name="tiny_event", version="v1.0",
        embedding_type="event", prediction_type="multilabel",
        split_mode="trainvaltest", splits=["train", "valid", "test"],
        sample_duration=seconds, evaluation=["event_onset_200ms_fms", "segment_1s_er"],
        mirrors_group="event",
    )
    return task_dir


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tasks-tiny")
    print(make_scene_task(out), make_event_task(out))


# ---------------------------------------------------------------- paths
REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "hear_abt" / "examples" / "speech_and_bell.wav"


# ---------------------------------------------------------------- markdown
def fenced_blocks(markdown: str, lang: str = "bash") -> list[str]:
    """The bodies of the ```lang fenced code blocks of a markdown text."""
    return re.findall(rf"^```{lang}\n(.*?)^```", markdown, flags=re.M | re.S)


# ---------------------------------------------------------------- training states and pooling
def fake_state(n_floats: int, step: int) -> dict:
    """A valid training state of about 4 x n_floats bytes, different per step."""
    import torch

    from hear_abt.train import state

    g = torch.Generator().manual_seed(step)
    return {"format": state.STATE_FORMAT, "version": state.STATE_VERSION, "step": step, "run_id": None,
            "model": {"w": torch.randn(n_floats, generator=g)}}


def reference_pooling(frames, centres, ts, window):
    """Brute force: the frames centred in [t - w/2, t + w/2), else the nearest one."""
    import torch

    out = []
    for t in ts.tolist():
        inside = (centres >= t - window / 2) & (centres < t + window / 2)
        sel = frames[inside] if inside.any() else frames[(centres - t).abs().argmin()][None]
        out.append(sel.mean(0) + sel.amax(0))
    return torch.stack(out)
