"""The real recordings and synthesisers the suite draws from, and who may use what.

Every source item has an id (``voice:<variant>``, ``sfx:<package>/<file>``,
``drum:<kit>/<file>``, ``inst:<soundfont>:<program>``). ``holdout_role`` puts
each item in exactly one role -- "test", "valid" or "train" -- by a fixed salted
hash that does not depend on the build seed, and the sound-effect files that
the environment/event tasks use are reserved for tasks as a whole. The
pretraining corpus only ever takes items that no task can put in a test split
(see corpus.py), whatever seeds the two builds use.
"""
from __future__ import annotations

import functools
import hashlib
import io
import re
import struct
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.minihear import audio

# ---------------------------------------------------------------- hold-out


def _unit(key: str) -> float:
    """A stable number in [0, 1) for a string (sha1; same on every machine)."""
    return int(hashlib.sha1(f"minihear-v1:{key}".encode()).hexdigest()[:12], 16) / 16**12


def holdout_role(item_id: str, test: float = 0.25, valid: float = 0.15) -> str:
    u = _unit(item_id)
    return "test" if u < test else ("valid" if u < test + valid else "train")


# ---------------------------------------------------------------- licences

# From each package's /usr/share/doc/<package>/copyright (Debian 12).
LICENSES = {
    "espeak-ng": "GPL-3+",
    "sound-theme-freedesktop": "GPL-2 / GPL-2+ / CC-BY-3.0 / CC-BY-SA-3.0 (per file)",
    "frozen-bubble-data": "GPL-2",
    "lbreakout2-data": "GPL",
    "neverball-data": "GPL-2+ (sounds)",
    "pingus-data": "GPL-2+",
    "hydrogen-drumkits": "GPL-2 / GPL-2+ / CC-BY-3.0 / CC-BY-SA-3.0 / CC0 (per kit)",
    "fluid-soundfont-gm": "MIT (FluidR3_GM)",
    "timgm6mb-soundfont": "GPL-2 / GPL-3+ (TimGM6mb)",
    "fluidsynth": "LGPL-2.1+ (renderer only)",
    "sox": "GPL-2+ / LGPL-2.1+ (reverb effect only)",
}

# ---------------------------------------------------------------- speech (espeak-ng)

_VARIANT_DIR = Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data/voices/!v")
# Variants that are not human-sounding or that espeak maps onto another one.
_BAD_VARIANTS = {"Demonic", "croak", "UniRobot", "anikaRobot", "fast", "Mr serious", "whisper", "whisperf"}
_BAD_VARIANTS |= {f"robosoft{i}" for i in ["", 2, 3, 4, 5, 6, 7, 8]}

ENGLISH = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]


@functools.lru_cache(maxsize=1)
def voice_variants() -> tuple[str, ...]:
    """All installed espeak-ng voice variants usable as 'speakers', sorted."""
    import glob
    import os

    names = sorted({os.path.basename(p) for p in glob.glob(str(_VARIANT_DIR / "*"))})
    names = [n for n in names if n not in _BAD_VARIANTS and " " not in n]
    if not names:
        raise RuntimeError(f"no espeak-ng voice variants under {_VARIANT_DIR}: run scripts/install_apt.sh")
    return tuple(names)


def variants_for(role: str) -> list[str]:
    """Speakers of one role; test speakers never speak in train/valid or the corpus."""
    return [v for v in voice_variants() if holdout_role(f"voice:{v}") == role]


def speak(text: str, lang: str, variant: str, wpm: int, pitch: int) -> np.ndarray:
    """espeak-ng -> 16 kHz float32 (trimmed)."""
    import soundfile as sf

    cmd = ["espeak-ng", "-v", f"{lang}+{variant}", "-s", str(wpm), "-p", str(pitch), "--stdout", text]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    x, sr = sf.read(io.BytesIO(out), dtype="float32")
    return audio.trim_silence(audio.resample(x, sr))


KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
# Neutral filler words for multi-talker babble; none of them is a keyword.
FILLER = (
    "apple river morning table window garden yellow paper music number simple market "
    "little orange summer winter letter coffee station doctor pencil button silver "
    "happy picture kitchen country weather island forest planet rocket monkey tiger "
    "basket bottle candle dinner engine finger hammer jacket ladder mirror needle "
    "pocket rabbit saddle tunnel valley wallet zebra blanket cabbage dragon feather"
).split()
LANGUAGES = ["de", "es", "fr-fr", "it", "pt", "nl", "pl", "sv"]

# ---------------------------------------------------------------- sound effects


@dataclass(frozen=True)
class Sfx:
    package: str
    path: str

    @property
    def id(self) -> str:
        return f"sfx:{self.package}/{Path(self.path).name}"


_SFX_DIRS = {
    "sound-theme-freedesktop": "/usr/share/sounds/freedesktop/stereo",
    "frozen-bubble-data": "/usr/share/games/frozen-bubble/snd",
    "lbreakout2-data": "/usr/share/games/lbreakout2/sounds",
    "neverball-data": "/usr/share/games/neverball/snd",
    "pingus-data": "/usr/share/games/pingus/data/sounds",
}


def sfx(package: str, stem: str) -> Sfx:
    d = Path(_SFX_DIRS[package])
    hits = sorted(p for p in d.glob(f"{stem}.*") if p.suffix in {".oga", ".ogg", ".wav"})
    if not hits:
        raise FileNotFoundError(f"{d}/{stem}.*: install {package} (scripts/install_apt.sh)")
    return Sfx(package, str(hits[0]))


def all_sfx() -> list[Sfx]:
    out = []
    for pkg, d in _SFX_DIRS.items():
        for p in sorted(Path(d).glob("*")):
            if p.suffix in {".oga", ".ogg", ".wav"}:
                out.append(Sfx(pkg, str(p)))
    return out


# ESC-like classes: one recorded effect each, from five packages.
ESC_CLASSES = {
    "alarm_clock": ("sound-theme-freedesktop", "alarm-clock-elapsed"),
    "camera_shutter": ("sound-theme-freedesktop", "camera-shutter"),
    "chime": ("sound-theme-freedesktop", "complete"),
    "warning_beep": ("sound-theme-freedesktop", "dialog-warning"),
    "phone_ring": ("sound-theme-freedesktop", "phone-incoming-call"),
    "busy_tone": ("sound-theme-freedesktop", "phone-outgoing-busy"),
    "trash": ("sound-theme-freedesktop", "trash-empty"),
    "applause": ("frozen-bubble-data", "applause"),
    "snore": ("frozen-bubble-data", "snore"),
    "typewriter": ("frozen-bubble-data", "typewriter"),
    "shatter": ("frozen-bubble-data", "destroy_group"),
    "bump": ("neverball-data", "bump"),
    "fall": ("neverball-data", "fall"),
    "jump": ("neverball-data", "jump"),
    "tick": ("neverball-data", "tick"),
    "explosion": ("lbreakout2-data", "exp"),
    "metal": ("lbreakout2-data", "metal"),
    "shot": ("lbreakout2-data", "shot"),
    "splash": ("pingus-data", "splash"),
    "digging": ("pingus-data", "digger"),
}

# DCASE-2016-like office-ish events: short, distinct onsets.
EVENT_CLASSES = {
    "bell": ("sound-theme-freedesktop", "bell"),
    "shutter": ("sound-theme-freedesktop", "camera-shutter"),
    "message": ("sound-theme-freedesktop", "message"),
    "attention": ("sound-theme-freedesktop", "window-attention"),
    "tock": ("neverball-data", "tock"),
    "wall_hit": ("lbreakout2-data", "wall"),
    "plop": ("pingus-data", "plop"),
    "stick": ("frozen-bubble-data", "stick"),
}

# FSD-like sound-effect categories (pools of files); instruments/speech/drums come from elsewhere.
FSD_SFX = {
    "alarm": [("sound-theme-freedesktop", s) for s in ["phone-outgoing-calling", "suspend-error", "service-login", "service-logout", "audio-test-signal"]],
    "game_effect": [("neverball-data", s) for s in ["goal", "success", "grow", "penalty", "switch", "bumpbig"]]
    + [("lbreakout2-data", s) for s in ["goldshower", "speeddown", "speedup", "freeze"]],
    "crowd": [("frozen-bubble-data", s) for s in ["lose", "applause", "newroot_solo"]] + [("pingus-data", s) for s in ["yipee", "ohno", "letsgo"]],
}


def task_sfx_ids() -> set[str]:
    """Every effect any task can use (in any split): the corpus never touches these."""
    pairs = list(ESC_CLASSES.values()) + list(EVENT_CLASSES.values())
    pairs += [p for pool in FSD_SFX.values() for p in pool]
    return {sfx(*p).id for p in pairs}


# ---------------------------------------------------------------- drums (hydrogen-drumkits)

DRUM_DIR = Path("/usr/share/hydrogen/data/drumkits")
# First match wins; tested against the file name, then the kit's instrument name.
_DRUM_RULES = [
    ("clap", r"clap"),
    ("rim", r"rim|stick|(^|[^a-z])rs_"),
    ("open_hihat", r"open|ohh|(^|[^a-z])ho_|hh_?op|hat_op"),
    ("closed_hihat", r"closed|chh|hh|hat"),
    ("cymbal", r"crash|ride|cymbal|(^|[^a-z])rd|(^|[^a-z])cc_|(^|[^a-z])rc_|splash|china"),
    ("tom", r"tom|(^|[^a-z])tm|(^|[^a-z])t[12]_|(^|[^a-z])ft_"),
    ("snare", r"snare|(^|[^a-z])sn|(^|[^a-z])sd_"),
    ("kick", r"kick|bass ?drum|(^|[^a-z])bd|_k_"),
]
DRUM_CLASSES = [c for c, _ in _DRUM_RULES]


def _drum_class(*texts: str) -> str | None:
    for t in texts:
        for c, rule in _DRUM_RULES:
            if re.search(rule, t.lower()):
                return c
    return None


@functools.lru_cache(maxsize=1)
def drum_samples() -> tuple[tuple[str, str | None], ...]:
    """(path, stroke class or None) for every sample of every installed kit, sorted."""
    out: dict[str, str | None] = {}
    for xml in sorted(DRUM_DIR.glob("*/drumkit.xml")):
        root = ET.parse(xml).getroot()
        ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
        for ins in root.iter(f"{ns}instrument"):
            name = ins.findtext(f"{ns}name") or ""
            for fn in ins.iter(f"{ns}filename"):
                p = xml.parent / (fn.text or "")
                if p.is_file() and p.stat().st_size > 2000:
                    out.setdefault(str(p), _drum_class(Path(p).name, name))
    if not out:
        raise RuntimeError(f"no drum kits under {DRUM_DIR}: install hydrogen-drumkits")
    return tuple(sorted(out.items()))


def drum_id(path: str) -> str:
    p = Path(path)
    return f"drum:{p.parent.name}/{p.name}"


# ---------------------------------------------------------------- instruments (fluidsynth)

SOUNDFONTS = {"fluidr3": "/usr/share/sounds/sf2/FluidR3_GM.sf2", "timgm6mb": "/usr/share/sounds/sf2/TimGM6mb.sf2"}
# General MIDI families (program ranges) used as instrument labels.
GM_FAMILIES = {
    "piano": range(0, 8), "chromatic_percussion": range(8, 16), "organ": range(16, 24),
    "guitar": range(24, 32), "bass": range(32, 40), "strings": range(40, 52),
    "brass": range(56, 64), "reed": range(64, 72), "pipe": range(72, 80), "synth_lead": range(80, 88),
}
MELODIC_PROGRAMS = [p for r in GM_FAMILIES.values() for p in r]
NOTE_LOW, NOTE_HIGH = 36, 84  # rendered note bank (C2..C6)
_SLOT_S, _ON_S = 1.6, 0.9


def instrument_id(sf: str, program: int) -> str:
    return f"inst:{sf}:{program}"


def instruments_for(role: str) -> list[tuple[str, int]]:
    return [(sf, p) for sf in SOUNDFONTS for p in MELODIC_PROGRAMS if holdout_role(instrument_id(sf, p)) == role]


def _midi_bank(program: int) -> bytes:
    """A type-0 MIDI file: every note NOTE_LOW..NOTE_HIGH once, velocity 100, 120 bpm."""

    def vlq(n: int) -> bytes:
        out = [n & 0x7F]
        n >>= 7
        while n:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        return bytes(reversed(out))

    tick = 960  # ticks per beat; 120 bpm -> 1920 ticks per second
    on, off = int(_ON_S * 2 * tick), int((_SLOT_S - _ON_S) * 2 * tick)
    ev = vlq(0) + bytes([0xC0, program])
    for i, note in enumerate(range(NOTE_LOW, NOTE_HIGH + 1)):
        ev += vlq(0 if i == 0 else off) + bytes([0x90, note, 100])
        ev += vlq(on) + bytes([0x80, note, 0])
    ev += vlq(off) + b"\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, tick) + b"MTrk" + struct.pack(">I", len(ev)) + ev


def note_bank(cache: Path, sf: str, program: int) -> np.ndarray:
    """[n_notes, slot samples] float32: each note of one instrument, rendered once and cached."""
    f = cache / f"bank_{sf}_{program}.npy"
    if not f.exists():
        import os
        import tempfile

        import soundfile as sf_

        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as td:
            mid, wav = Path(td, "b.mid"), Path(td, "b.wav")
            mid.write_bytes(_midi_bank(program))
            subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.5", "-r", str(audio.SR), "-F", str(wav), SOUNDFONTS[sf], str(mid)],
                           check=True, capture_output=True)
            x, _ = sf_.read(str(wav), dtype="float32", always_2d=True)
            x = x.mean(axis=1)
            slot = int(_SLOT_S * audio.SR)
            n = NOTE_HIGH - NOTE_LOW + 1
            x = audio.fit_length(x, n * slot).reshape(n, slot)
            tmp = Path(td, "bank.npy")
            np.save(tmp, x)
            os.replace(tmp, f)
    return np.load(f, mmap_mode="r")


def note(cache: Path, sf: str, program: int, midi: int) -> np.ndarray:
    return np.array(note_bank(cache, sf, program)[midi - NOTE_LOW], dtype=np.float32)
