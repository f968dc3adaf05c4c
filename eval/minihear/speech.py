"""Speech tasks from espeak-ng: keyword spotting, language id, speaker count.

Speakers are espeak-ng voice variants; the test split only uses test-role
variants (sources.holdout_role), as Speech Commands keeps speakers apart.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.minihear import audio, sources
from eval.minihear.task import Clip, Task, balanced_labels, clip_rng

SPLITS = ["train", "valid", "test"]


def _voice(rng: np.random.Generator, role: str) -> dict:
    return {
        "variant": str(rng.choice(sources.variants_for(role))),
        "wpm": int(rng.integers(110, 230)),
        "pitch": int(rng.integers(10, 90)),
    }


def _plan(name: str, sizes: dict[str, int], labels: list[str], seed: int, make) -> list[Clip]:
    clips = []
    for si, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, sum(map(ord, name)), si])
        for i, lab in enumerate(balanced_labels(sizes[split], labels, rng)):
            recipe, srcs = make(lab, split, rng)
            clips.append({"task": name, "split": split, "file": f"{split}-{i:05d}.wav", "target": [lab],
                          "sources": srcs, "recipe": recipe, "seed": [seed, sum(map(ord, name)), si, i]})
    return clips


# ---------------------------------------------------------------- keyword spotting

def _kws_plan(seed: int, small: bool) -> list[Clip]:
    sizes = {"train": 60, "valid": 20, "test": 30} if small else {"train": 500, "valid": 100, "test": 200}

    def make(word, split, rng):
        v = _voice(rng, split)
        v.update(text=word, lang=str(rng.choice(sources.ENGLISH)))
        return v, [f"voice:{v['variant']}"]

    return _plan("mini_speech_commands", sizes, sources.KEYWORDS, seed, make)


def _kws_render(clip: Clip, cache: Path) -> np.ndarray:
    r, rng = clip["recipe"], clip_rng(clip)
    x = sources.speak(r["text"], r["lang"], r["variant"], r["wpm"], r["pitch"])
    return audio.nuisance(audio.place(x, audio.SR, rng), rng, snr_db=(-5, 20))


# ---------------------------------------------------------------- language id

def _lid_plan(seed: int, small: bool) -> list[Clip]:
    sizes = {"train": 32, "valid": 16, "test": 16} if small else {"train": 240, "valid": 64, "test": 160}

    def make(lang, split, rng):
        v = _voice(rng, split)
        nums = [str(int(rng.integers(0, 100000))) for _ in range(int(rng.integers(1, 4)))]
        v.update(text=", ".join(nums), lang=lang)
        return v, [f"voice:{v['variant']}"]

    return _plan("mini_voxlingua", sizes, sources.LANGUAGES, seed, make)


def _lid_render(clip: Clip, cache: Path) -> np.ndarray:
    r, rng = clip["recipe"], clip_rng(clip)
    x = sources.speak(r["text"], r["lang"], r["variant"], r["wpm"], r["pitch"])
    return audio.nuisance(audio.place(x, 3 * audio.SR, rng), rng, snr_db=(0, 25))


# ---------------------------------------------------------------- speaker count

def _count_plan(seed: int, small: bool) -> list[Clip]:
    sizes = {"train": 25, "valid": 10, "test": 15} if small else {"train": 200, "valid": 60, "test": 120}

    def make(count, split, rng):
        pool = sources.variants_for(split)
        talkers = []
        for variant in rng.choice(pool, size=int(count), replace=False):
            v = _voice(rng, split)
            words = rng.choice(sources.FILLER, size=int(rng.integers(4, 9)))
            v.update(variant=str(variant), text=" ".join(words), lang=str(rng.choice(sources.ENGLISH)),
                     offset=float(rng.uniform(0, 1.0)), level_db=float(rng.uniform(-3, 3)))
            talkers.append(v)
        return {"talkers": talkers}, [f"voice:{t['variant']}" for t in talkers]

    return _plan("mini_libricount", sizes, ["0", "1", "2", "3", "4"], seed, make)


def _count_render(clip: Clip, cache: Path) -> np.ndarray:
    rng = clip_rng(clip)
    n = 3 * audio.SR
    mix = np.zeros(n, np.float32)
    for t in clip["recipe"]["talkers"]:
        x = sources.speak(t["text"], t["lang"], t["variant"], t["wpm"], t["pitch"])
        x = x / audio.rms(x) * 10 ** (t["level_db"] / 20)
        s = int(t["offset"] * audio.SR)
        x = x[: n - s]
        mix[s : s + x.size] += x
    if not clip["recipe"]["talkers"]:  # zero speakers: room tone only
        mix = audio.colored_noise(n, rng, float(rng.choice([0.0, 1.0, 2.0]))) * 0.05
        return audio.peak_normalize(mix, rng.uniform(-30, -6))
    return audio.nuisance(mix, rng, snr_db=(10, 30))


TASKS = [
    Task("mini_speech_commands", "Speech Commands v0.0.2 (keyword spotting)", "speech", "scene", "multiclass",
         "trainvaltest", SPLITS, 1.0, ["top1_acc"], list(sources.KEYWORDS), _kws_plan, _kws_render,
         description="One spoken keyword per 1 s clip; espeak-ng English accents x voice variants, "
                     "random speaking rate (110-230 wpm) and pitch; test speakers (voice variants) are held out.",
         packages=["espeak-ng", "sox"]),
    Task("mini_voxlingua", "VoxLingua107 top 10 (spoken language id)", "speech", "scene", "multiclass",
         "trainvaltest", SPLITS, 3.0, ["top1_acc", "mAP", "d_prime", "aucroc"], list(sources.LANGUAGES),
         _lid_plan, _lid_render,
         description="Numbers read aloud by espeak-ng in 8 European languages (random crop of 3 s); "
                     "test speakers (voice variants) held out. HEAR uses 5 folds here; we keep train/valid/test so "
                     "that test speakers stay out of the pretraining corpus.",
         packages=["espeak-ng", "sox"]),
    Task("mini_libricount", "LibriCount (speaker count)", "speech", "scene", "multiclass",
         "trainvaltest", SPLITS, 3.0, ["top1_acc", "mAP", "d_prime", "aucroc"], ["0", "1", "2", "3", "4"],
         _count_plan, _count_render,
         description="0-4 distinct espeak-ng talkers (English accents, random words) overlapping in 3 s, "
                     "each at an equal level +-3 dB; test talkers held out. HEAR uses 0-10 talkers in 5 s and 5 folds; "
                     "train/valid/test here keeps test talkers out of the pretraining corpus.",
         packages=["espeak-ng", "sox"]),
]
