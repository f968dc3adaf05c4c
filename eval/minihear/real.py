"""Real recordings from Debian packages: which files, what kind, what licence, who may use them.

Every file (or member of a zip inside a package) is a source item with id
``real:<package>/<path>[!<member>]``. Task test splits hold out sources by
fixed rules that do not depend on any seed (``reserved_for_tasks``), and the
pretraining corpus never takes a reserved source, so a corpus of any build
shares nothing with any task's test split.
"""
from __future__ import annotations

import functools
import io
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.minihear import audio, debs
from eval.minihear.sources import holdout_role

KINDS = ("speech", "music", "environment")
AUDIO_RE = r"\.(ogg|oga|opus|wav|flac)$"
GSM_RE = r"\.gsm$"  # headerless GSM 6.10 at 8 kHz (asterisk prompt sets)

# package -> (rules, licence of its audio as read from usr/share/doc/<package>/copyright).
# A rule is (regex on the path, or "zip-path::member-regex", kind); the first match wins.
ASTERISK_VOICES = {
    "asterisk-core-sounds-en-wav": "en", "asterisk-core-sounds-es-wav": "es", "asterisk-core-sounds-fr-wav": "fr",
    "asterisk-core-sounds-it-wav": "it", "asterisk-core-sounds-ru-wav": "ru", "asterisk-prompt-it-menardi-wav": "it",
}
_SPEECH_WAV = [(r"/silence/", None), (AUDIO_RE, "speech")]
PACKAGES: dict[str, tuple[list[tuple[str, str | None]], str]] = {
    **{p: (_SPEECH_WAV, "CC-BY-SA-3.0") for p in ASTERISK_VOICES if "menardi" not in p},
    "asterisk-prompt-it-menardi-wav": (_SPEECH_WAV, "CC-BY-SA-3.0 (prompts) / LGPL-2.1"),
    "fillets-ng-data-cs": ([(r"/sound/.*" + AUDIO_RE, "speech")], "GPL-2+"),
    "fillets-ng-data-nl": ([(r"/sound/.*" + AUDIO_RE, "speech")], "GPL-2+"),
    "fillets-ng-data": ([(r"/music/.*" + AUDIO_RE, "music"), (r"/sound/.*/en/.*" + AUDIO_RE, "speech"),
                         (r"/sound/.*" + AUDIO_RE, "environment")], "GPL-2+"),
    "warzone2100-music": ([(AUDIO_RE, "music")], "GPL-2+ / CC-BY-SA-3.0 (per file)"),
    "ufoai-music": ([(r"0music\.pk3::.*" + AUDIO_RE, "music")], "GPL-2+ / CC-BY-SA-3.0 (per file)"),
    "0ad-data": ([(r"public\.zip::audio/music/.*" + AUDIO_RE, "music"),
                  (r"public\.zip::audio/voice/.*" + AUDIO_RE, "speech"),
                  (r"public\.zip::audio/.*" + AUDIO_RE, "environment")], "CC-BY-SA-3.0 (art and audio)"),
    "wesnoth-1.16-music": ([(AUDIO_RE, "music")], "GPL-2+"),
    "nexuiz-music": ([(r"music\.pk3::.*" + AUDIO_RE, "music")], "GPL-2+"),
    "colobot-common-sounds": ([(r"/music/.*" + AUDIO_RE, "music"), (AUDIO_RE, "environment")], "GPL-3+ / per file"),
    "supertuxkart-data": ([(r"/data/music/.*" + AUDIO_RE, "music"), (AUDIO_RE, "environment")],
                          "CC-BY-SA-3.0 / CC-BY-3.0 / GPL (per file)"),
    "freedroidrpg-data": ([(r"/(music|titles)/.*" + AUDIO_RE, "music"),
                           (r"/(voice_samples|tux_ingame_comments)/.*" + AUDIO_RE, "speech"),
                           (AUDIO_RE, "environment")], "GPL-2+ / CC0-1.0 (per file)"),
    "openclonk-data": ([(r"Music\.ocg/.*" + AUDIO_RE, "music")], "CC-BY-3.0 (music, per authors.txt) / ISC"),
    "hyperrogue-music": ([(AUDIO_RE, "music")], "CC-BY-SA-3.0 / CC-BY-3.0 / CC0-1.0 (per file)"),
    "asterisk-moh-opsound-wav": ([(AUDIO_RE, "music")], "CC-BY-SA-3.0"),
}

def _music_else_env(music: str) -> list[tuple[str, str | None]]:
    return [(music + ".*" + AUDIO_RE, "music"), (AUDIO_RE, "environment")]


# Corpus v3 adds these. Kinds by path: soundtrack "music", dialogue and voices "speech",
# effects and ambiences "environment". Licences from each package's copyright file.
V3_PACKAGES: dict[str, tuple[list[tuple[str, str | None]], str]] = {
    "asterisk-prompt-es-co": ([(GSM_RE, "speech")], "GPL-2"),
    "asterisk-prompt-fr-armelle": ([(GSM_RE, "speech")], "GPL-2+"),
    "festvox-ru": ([(r"/russian/.*/wav/.*" + AUDIO_RE, "speech")], "GPL-3 / BSD-like (voice data)"),
    "tuxpaint-stamps-default": ([(r"_desc[^/]*" + AUDIO_RE, "speech"), (AUDIO_RE, "environment")], "GPL-2"),
    "hedgewars-data": ([(r"/Data/Music/.*" + AUDIO_RE, "music"), (r"/Sounds/voices/.*" + AUDIO_RE, "speech"),
                        (AUDIO_RE, "environment")], "GPL-2 / CC-BY-SA-3.0 (per file)"),
    "nexuiz-data": ([(r"data\.pk3::sound/(announcer|tutorial)/.*" + AUDIO_RE, "speech"),
                     (r"data\.pk3::sound/.*" + AUDIO_RE, "environment")], "GPL-2+"),
    "warzone2100-data": ([(r"base\.wz::audio/(tutorial|memressp|proxmessages|vtoltalk|countdown|taunts|extra|nexus|coltive)/.*"
                           + AUDIO_RE, "speech"),
                          (r"base\.wz::sequenceaudio/.*" + AUDIO_RE, "speech"),
                          (r"base\.wz::audio/.*" + AUDIO_RE, "environment")], "GPL-2+ / CC-BY-SA-3.0 / CC0 (per file)"),
    "unknown-horizons": ([(r"/audio/music/.*" + AUDIO_RE, "music"), (r"/audio/voice/.*" + AUDIO_RE, "speech"),
                          (AUDIO_RE, "environment")], "GPL-2+ / CC-BY-SA-3.0 (per file)"),
    "redeclipse-data": ([(r"/sounds/(music|theme|original)[^/]*.*" + AUDIO_RE, "music"),
                         (r"/maps/.*" + AUDIO_RE, "music"),
                         (r"/sounds/(voice|announcer)/.*" + AUDIO_RE, "speech"),
                         (AUDIO_RE, "environment")], "CC-BY-SA-3.0 / CC-BY-3.0 / CC0-1.0 (per file)"),
    "supertux-data": ([(r"/music/.*" + AUDIO_RE, "music"), (r"/speech/.*" + AUDIO_RE, "speech"),
                       (AUDIO_RE, "environment")], "GPL-2+ / GPL-3+ / CC-BY-SA (per file)"),
    "naev-data": (_music_else_env(r"/snd/music/"), "CC-BY-3.0 / CC-BY-SA-3.0 / GPL / public domain (per file)"),
    "widelands-data": (_music_else_env(r"/data/music/"), "GPL-2+ / CC-BY-SA-3.0 (per file)"),
    "berusky2-data": (_music_else_env(r"/berusky2/music/"), "GPL-2+"),
    "megaglest-data": (_music_else_env(r"/music/"), "CC-BY-SA-3.0 (data)"),
    "flare-game": (_music_else_env(r"/music/"), "CC-BY-SA-3.0+ / GPL-3+ (per file)"),
    "btanks-data": (_music_else_env(r"/data/tunes/"), "GPL-2+ / LGPL-2.1+ (per file)"),
    "ardentryst": ([(r"/Music/.*" + AUDIO_RE, "music"), (r"/Sounds/VOI_.*" + AUDIO_RE, "speech"),
                    (AUDIO_RE, "environment")], "GPL-3+ / CC-BY-SA-3.0 (per file)"),
    "warmux-data": ([(r"/music/.*" + AUDIO_RE, "music"), (r"/sound/.*/voices/.*" + AUDIO_RE, "speech"),
                     (AUDIO_RE, "environment")], "GPL-2+"),
    "marsshooter-data": (_music_else_env(r"/audio/music/"), "GPL-3+ / CC-BY-SA-3.0 / CC-BY-3.0 (per file)"),
    "trackballs-data": (_music_else_env(r"/music/"), "GPL-2+ / Ethymonics Free Music License (music)"),
    "starfighter-data": (_music_else_env(r"/music/"), "CC-BY-3.0 / CC-BY-SA-3.0 / public domain (per file)"),
    "lincity-ng-data": (_music_else_env(r"/music/"), "GPL-2+"),
    "enigma-data": (_music_else_env(r"/music/"), "GPL-2"),
    "freecol": ([(r"/video/", None), (r"/resources/(music|sound/anthem)/.*" + AUDIO_RE, "music"),
                 (AUDIO_RE, "environment")],
                "GPL-2+ / CC-BY-SA-3.0 (per file)"),
    "freeorion-data": ([(r"/sound/.*" + AUDIO_RE, "environment")], "CC-BY-SA-3.0 (data)"),
    "freedink-data": ([(r"\.ogg$", "music"), (r"\.wav$", "environment")], "GPL-3+ / free sound replacements"),
    "scorched3d-data": ([(r"/music/.*" + AUDIO_RE, "music"), (AUDIO_RE, "environment")], "GPL-2+ / CC-BY-SA-3"),
    "wordwarvi-sound": ([(r"/sounds/(dtox3|lucky|destiny)[^/]*" + AUDIO_RE, "music"), (AUDIO_RE, "environment")],
                        "GPL-2+ / CC-BY-SA-3.0 (per file)"),
    "zaz-data": ([(r"/mus\d[^/]*" + AUDIO_RE, "music"), (AUDIO_RE, "environment")], "GPL-3+ / CC-BY-SA-3.0"),
    "drascula-music": ([(AUDIO_RE, "music")], "Drascula licence (freely redistributable, BSD-like)"),
    "singularity-music": ([(AUDIO_RE, "music")], "CC-BY-SA"),
    "fretsonfire-songs-muldjord": ([(AUDIO_RE, "music")], "CC-BY-SA-3.0"),
    "fretsonfire-songs-sectoid": ([(AUDIO_RE, "music")], "CC-BY-SA-3.0"),
    "pushover-data": ([(AUDIO_RE, "music")], "GPL-3+"),
    "lordsawar-data": ([(AUDIO_RE, "music")], "GPL-3+ / CC-BY-SA (per file)"),
    "wizznic-data": ([(r"/music/.*" + AUDIO_RE, "music"), (AUDIO_RE, "environment")], "GPL-3+"),
    "xmoto-data": ([(AUDIO_RE, "music")], "GPL-2+ (per file)"),
}
# Corpus versions: each names the packages it takes, so an older corpus stays reproducible.
CORPUS_VERSIONS: dict[str, tuple[str, ...]] = {"v2": tuple(sorted(PACKAGES))}
PACKAGES.update(V3_PACKAGES)
CORPUS_VERSIONS["v3"] = tuple(sorted(PACKAGES))
CORPUS_VERSION = "v3"  # what a corpus build takes unless told otherwise

# Over 300 MB to download: fetched into the cache on demand, never installed.
HEAVY = {"0ad-data", "supertuxkart-data", "freedroidrpg-data", "ufoai-music",
         "naev-data", "widelands-data", "berusky2-data", "redeclipse-data"}

# ---------------------------------------------------------------- task hold-outs (seed-independent)
# asterisk_digits: the menardi voice is the test speaker; the corpus never hears that voice at all.
TEST_VOICE_PACKAGES = {"asterisk-prompt-it-menardi-wav"}
# Other packages of the same voice: no corpus version may take them (asserted in the tests).
TEST_VOICE_ELSEWHERE = {"asterisk-prompt-it", "asterisk-prompt-it-menardi-alaw", "asterisk-prompt-it-menardi-gsm"}
# fillets_speaker: dialogue lines whose fixed hash role is "test".
FILLETS_SPEECH = ("fillets-ng-data-cs", "fillets-ng-data-nl")
# game_soundtrack: music tracks whose fixed hash role is "test".
SOUNDTRACK_GAMES = {"warzone2100-music": "warzone2100", "wesnoth-1.16-music": "wesnoth",
                    "hyperrogue-music": "hyperrogue", "colobot-common-sounds": "colobot",
                    "freedroidrpg-data": "freedroidrpg"}


@dataclass(frozen=True)
class RealSource:
    package: str
    path: str            # relative to the package root
    member: str | None   # inside the zip at `path`, if any
    kind: str
    root: str            # package root ('/' when installed)

    @property
    def id(self) -> str:
        return f"real:{self.package}/{self.path}" + (f"!{self.member}" if self.member else "")

    @property
    def name(self) -> str:
        return Path(self.member or self.path).name


def reserved_for_tasks(src: RealSource) -> bool:
    """True if some task's test split may hold this source (then the corpus must not)."""
    if src.package in TEST_VOICE_PACKAGES:
        return True
    if src.package in FILLETS_SPEECH and src.kind == "speech":
        return holdout_role(src.id) == "test"
    if src.package in SOUNDTRACK_GAMES and src.kind == "music":
        return holdout_role(src.id) == "test"
    return False


def _kind(rules: list[tuple[str, str | None]], path: str, member: str | None) -> str | None:
    for pattern, kind in rules:
        if "::" in pattern:
            zpat, mpat = pattern.split("::", 1)
            if member is not None and re.search(zpat + "$", path) and re.search(mpat, member, re.I):
                return kind
        elif member is None and re.search(pattern, "/" + path, re.I):
            return kind
    return None


@functools.cache
def list_sources(package: str, root: str) -> tuple[RealSource, ...]:
    """Every audio source of an unpacked/installed package, in sorted order."""
    if package not in PACKAGES:
        raise ValueError(f"unknown real-audio package {package!r}; known: {sorted(PACKAGES)}")
    rules, _ = PACKAGES[package]
    zips = {p.split("::")[0] for p, _ in rules if "::" in p}
    out = []
    for rel in debs.files(package, Path(root)):
        if any(re.search(z + "$", rel) for z in zips):
            with zipfile.ZipFile(Path(root) / rel) as zf:
                for m in sorted(zf.namelist()):
                    k = _kind(rules, rel, m)
                    if k:
                        out.append(RealSource(package, rel, m, k, root))
        else:
            k = _kind(rules, rel, None)
            if k:
                out.append(RealSource(package, rel, None, k, root))
    return tuple(out)


def sources(package: str, cache: Path | None = None, fetch: bool = True) -> tuple[RealSource, ...]:
    """A package's audio sources; fetch=True downloads it into the cache when missing."""
    if package not in PACKAGES:  # before any download
        raise ValueError(f"unknown real-audio package {package!r}; known: {sorted(PACKAGES)}")
    root = debs.fetch(package, cache) if fetch else debs.package_root(package, cache)
    if root is None:
        raise FileNotFoundError(f"{package} is neither installed nor in the cache: run scripts/install_apt.sh "
                                f"(small packages) or python -m eval.minihear.debs {package}")
    return list_sources(package, str(root))


def _zip(path: str) -> zipfile.ZipFile:
    """The archive opened once per process (reading a multi-GB index is the slow part).

    Keyed by pid: a forked worker must not share the parent's file offset."""
    return _zip_in(path, os.getpid())


@functools.lru_cache(maxsize=8)
def _zip_in(path: str, pid: int) -> zipfile.ZipFile:
    return zipfile.ZipFile(path)


def decode(src: RealSource, trim: bool = True) -> np.ndarray:
    """16 kHz mono float32 (down-mixed, polyphase-resampled); deterministic."""
    import soundfile as sf

    path = Path(src.root) / src.path
    if src.member is None and re.search(GSM_RE, src.path):
        x, sr = sf.read(str(path), dtype="float32", always_2d=True, format="RAW", subtype="GSM610",
                        samplerate=8000, channels=1)
    elif src.member is None:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    else:
        x, sr = sf.read(io.BytesIO(_zip(str(path)).read(src.member)), dtype="float32", always_2d=True)
    y = audio.resample(x.mean(axis=1), sr)
    return audio.trim_silence(y) if trim else y


def seconds(src: RealSource) -> float:
    """Duration from the header (no decoding); before silence trimming."""
    import soundfile as sf

    path = Path(src.root) / src.path
    if src.member is None and re.search(GSM_RE, src.path):
        return path.stat().st_size // 33 * 160 / 8000  # 33-byte frames of 160 samples
    info = sf.info(str(path) if src.member is None else io.BytesIO(_zip(str(path)).read(src.member)))
    return info.frames / info.samplerate


def content_hash(src: RealSource) -> str:
    """md5 of the encoded bytes: the same recording shipped twice is one source."""
    import hashlib

    path = Path(src.root) / src.path
    data = path.read_bytes() if src.member is None else _zip(str(path)).read(src.member)
    return hashlib.md5(data).hexdigest()


def copyright_file(package: str, root: str) -> str:
    return str(Path(root) / "usr/share/doc" / package / "copyright")
