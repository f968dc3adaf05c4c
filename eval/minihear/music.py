"""Music tasks: pitch of sampled-instrument notes (fluidsynth) and drum strokes.

Instruments are (soundfont, GM program) pairs and drum strokes are individual
recorded samples; test splits use held-out instruments / samples only, as
NSynth keeps instruments apart.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.minihear import audio, sources
from eval.minihear.task import Clip, Task, balanced_labels, clip_rng

SPLITS = ["train", "valid", "test"]
PITCHES = list(range(48, 72))  # C3..B3+1 octave; label index 0 is a C, so idx % 12 is the chroma


def _plan(name: str, sizes: dict[str, int], labels: list[str], seed: int, make) -> list[Clip]:
    clips = []
    key = sum(map(ord, name))
    for si, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, key, si])
        ctx = {}
        for i, lab in enumerate(balanced_labels(sizes[split], labels, rng)):
            recipe, srcs = make(lab, split, rng, ctx)
            clips.append({"task": name, "split": split, "file": f"{split}-{i:05d}.wav", "target": [lab],
                          "sources": srcs, "recipe": recipe, "seed": [seed, key, si, i]})
    return clips


# ---------------------------------------------------------------- pitch

def _pitch_plan(seed: int, small: bool) -> list[Clip]:
    sizes = {"train": 72, "valid": 24, "test": 24} if small else {"train": 600, "valid": 120, "test": 240}
    n_inst = {"train": 4, "valid": 2, "test": 2} if small else {"train": 24, "valid": 8, "test": 12}

    def make(lab, split, rng, ctx):
        if "pool" not in ctx:
            pool = sources.instruments_for(split)
            ctx["pool"] = [pool[j] for j in rng.choice(len(pool), size=n_inst[split], replace=False)]
        sf, prog = ctx["pool"][int(rng.integers(len(ctx["pool"])))]
        detune = float(2 ** (rng.uniform(-0.4, 0.4) / 12))
        return {"sf": sf, "program": int(prog), "midi": int(lab), "detune": detune}, [sources.instrument_id(sf, int(prog))]

    return _plan("mini_nsynth_pitch", sizes, [str(p) for p in PITCHES], seed, make)


def _pitch_render(clip: Clip, cache: Path) -> np.ndarray:
    r, rng = clip["recipe"], clip_rng(clip)
    x = sources.note(cache, r["sf"], r["program"], r["midi"])
    s = int(rng.integers(0, int(0.05 * audio.SR)))
    x = audio.speed(x, r["detune"])  # +-40 cents: real instruments are not perfectly in tune
    x = audio.fit_length(np.concatenate([np.zeros(s, np.float32), x]), audio.SR)
    return audio.nuisance(x, rng, snr_db=(0, 30), reverb_prob=0.3)


# ---------------------------------------------------------------- drum strokes

def _drum_plan(seed: int, small: bool) -> list[Clip]:
    sizes = {"train": 48, "valid": 16, "test": 24} if small else {"train": 400, "valid": 100, "test": 200}

    def make(lab, split, rng, ctx):
        pool = [p for p, c in sources.drum_samples() if c == lab and sources.holdout_role(sources.drum_id(p)) == split]
        if not pool:  # tiny classes may lack a valid sample: borrow from train, never from test
            pool = [p for p, c in sources.drum_samples() if c == lab and sources.holdout_role(sources.drum_id(p)) == "train"]
        path = pool[int(rng.integers(len(pool)))]
        return {"path": path, "speed": float(rng.uniform(0.9, 1.1))}, [sources.drum_id(path)]

    return _plan("mini_drum_stroke", sizes, list(sources.DRUM_CLASSES), seed, make)


def _drum_render(clip: Clip, cache: Path) -> np.ndarray:
    r, rng = clip["recipe"], clip_rng(clip)
    x = audio.speed(audio.load(r["path"]), r["speed"])
    s = int(rng.integers(0, int(0.05 * audio.SR)))
    x = audio.fit_length(np.concatenate([np.zeros(s, np.float32), x]), audio.SR)
    return audio.nuisance(x, rng, snr_db=(0, 30), reverb_prob=0.5)


TASKS = [
    Task("mini_nsynth_pitch", "NSynth Pitch 5h (pitch_acc, chroma_acc)", "music", "scene", "multiclass",
         "trainvaltest", SPLITS, 1.0, ["pitch_acc", "chroma_acc"], [str(p) for p in PITCHES],
         _pitch_plan, _pitch_render,
         description="Single notes (MIDI 48-71) of General MIDI melodic programs rendered by fluidsynth from "
                     "FluidR3_GM and TimGM6mb, detuned by up to +-40 cents; instruments (soundfont, program) of the test "
                     "split are held out.",
         tuning="first build (in tune, noise 5..35 dB SNR) gave a baseline of 0.917: added the detuning and "
                "5 dB more noise so that the linear probe does not nearly solve it.",
         packages=["fluidsynth", "fluid-soundfont-gm", "timgm6mb-soundfont", "sox"]),
    Task("mini_drum_stroke", "Mridangam Stroke (stroke class)", "music", "scene", "multiclass",
         "trainvaltest", SPLITS, 1.0, ["top1_acc", "mAP", "d_prime", "aucroc"], list(sources.DRUM_CLASSES),
         _drum_plan, _drum_render,
         description="One recorded drum stroke from the hydrogen drum kits (class from the sample's file / "
                     "instrument name), +-10% speed; the test split's samples are held out. HEAR's Mridangam tasks "
                     "use 5 folds; train/valid/test here keeps test samples out of the pretraining corpus.",
         packages=["hydrogen-drumkits", "sox"]),
]
