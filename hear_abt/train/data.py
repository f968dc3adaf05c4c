"""Training data: manifests, the on-disk log-mel cache, crops and data order.

Audio is decoded (soundfile), down-mixed and resampled (torchaudio) once, and
its log-mels are stored in a cache folder: one fp16 memmap of all frames
[total_frames, n_mels], the clips' (offset, frames) in clips.npy, the file
list and a JSON index with the normalisation statistics. The folder's name is
a hash of the MelConfig and the file list, so changing either builds a new
cache and an unchanged corpus reuses the old one. cache_build.py builds it
(resumably, on every core). Training from a built cache never imports
soundfile (the GPU machine may not have it).

Every random choice (clip order, crop offsets) is a pure function of
(seed, step): resuming at step s replays exactly what an uninterrupted run
would have done, and under DDP each process takes its slice of the same
global batch.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError
from ..frontend import LogMel, MelConfig

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".opus")
CACHE_VERSION = 1
SILENCE_PEAK = 1e-5  # a file whose peak is below this (-100 dBFS) counts as silent
CHUNK_SECONDS = 60.0  # long files are turned into log-mels a minute at a time


def derive_seed(seed: int, tag: str, *numbers: int) -> int:
    """A 63-bit seed from (seed, tag, numbers): independent streams per use."""
    text = ":".join([str(int(seed)), tag, *map(str, map(int, numbers))])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def generator_for(seed: int, tag: str, *numbers: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, tag, *numbers))


# ---------------------------------------------------------------- manifests
def list_audio(data: str | Path) -> list[str]:
    """Absolute paths of the audio files under a folder (recursive, sorted), or
    listed in a CSV manifest (a `path` or `file` column, else the first;
    relative paths are relative to the CSV's folder)."""
    data = Path(data).expanduser()
    if data.is_dir():
        files = []
        for root, dirs, names in os.walk(data):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files += [os.path.join(root, n) for n in names if n.lower().endswith(AUDIO_SUFFIXES)]
        files = sorted(os.path.abspath(f) for f in files)  # no per-file syscalls: millions of files
        if not files:
            raise DataError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {data}")
        return files
    if data.is_file() and data.suffix.lower() in (".csv", ".tsv"):
        with data.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t" if data.suffix.lower() == ".tsv" else ","))
        if not rows:
            raise DataError(f"{data}: empty manifest")
        header = [h.strip().lower() for h in rows[0]]
        col = next((header.index(k) for k in ("path", "file", "filename") if k in header), None)
        body = rows[1:] if col is not None else rows
        col = col or 0
        base = os.path.abspath(data.parent)
        files = [os.path.normpath(os.path.join(base, r[col].strip())) for r in body if r and r[col].strip()]
        if not files:
            raise DataError(f"{data}: the manifest lists no files")
        return files
    raise DataError(f"--data {data}: not a folder or a .csv/.tsv manifest")


def cache_key(files: Sequence[str], mel: MelConfig) -> str:
    h = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "mel": mel.to_dict()}, sort_keys=True).encode())
    for f in files:
        h.update(f.encode() + b"\0")
    return h.hexdigest()[:16]


def default_cache_root() -> Path:
    return Path(os.environ.get("HEAR_ABT_CACHE", "~/.cache/hear_abt")).expanduser() / "mels"


# ---------------------------------------------------------------- decoding
def log_mel_chunked(lm: LogMel, wav: torch.Tensor) -> torch.Tensor:
    """[samples] -> [n_mels, frames], a minute of frames at a time so that hour-
    long files fit in memory; identical to lm(wav[None])[0]."""
    cfg = lm.cfg
    n = cfg.n_frames(wav.numel())
    padded = torch.nn.functional.pad(wav[None], (cfg.n_fft // 2, cfg.n_fft // 2))
    step = max(1, int(CHUNK_SECONDS * cfg.sample_rate / cfg.hop_length))
    parts = []
    for f0 in range(0, n, step):
        nf = min(step, n - f0)
        seg = padded[:, f0 * cfg.hop_length : (f0 + nf - 1) * cfg.hop_length + cfg.n_fft]
        parts.append(lm(seg, center=False)[0])
    return torch.cat(parts, dim=1)


class CacheError(DataError):
    """A log-mel cache folder that is incomplete or inconsistent."""


# ---------------------------------------------------------------- reading
@dataclass
class MelCache:
    """A built cache, memory-mapped read-only."""

    folder: Path
    mel: MelConfig
    clips: np.ndarray  # [n, 2] (offset, frames)
    frames: np.memmap  # [total_frames, n_mels] fp16
    norm_stats: tuple[float, float]
    index: dict

    @classmethod
    def open(cls, folder: str | Path) -> MelCache:
        """Open a built cache after checking that its files agree with each
        other (sizes, clip table, key); CacheError names the file that does not."""
        folder = Path(folder)
        path = folder / "index.json"
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
            mel = MelConfig.from_dict(index["mel"])
            n_clips, total, ns = int(index["n_clips"]), int(index["total_frames"]), index["norm_stats"]
            mean, std = (float(v) for v in ns)
        except FileNotFoundError:
            raise CacheError(f"{path} is missing: {folder} is not a built log-mel cache") from None
        except (ValueError, KeyError, TypeError) as e:
            raise CacheError(f"{path} is corrupt: {type(e).__name__}: {e}") from None
        path = folder / "clips.npy"
        try:
            clips = np.load(path)
        except (OSError, ValueError, EOFError) as e:
            raise CacheError(f"{path} is corrupt: {type(e).__name__}: {e}") from None
        if clips.shape != (n_clips, 2) or (n_clips and (clips[0, 0] != 0 or (np.cumsum(clips[:, 1])[:-1] != clips[1:, 0]).any()
                                                        or int(clips[:, 1].sum()) != total or (clips[:, 1] <= 0).any())):
            raise CacheError(f"{path} does not match {folder / 'index.json'} ({n_clips} clips, {total} frames): "
                             f"a table of shape {clips.shape}")
        path = folder / "mels.f16"
        want = total * mel.n_mels * 2
        have = path.stat().st_size if path.is_file() else None
        if have != want:
            raise CacheError(f"{path} holds {have} bytes, its index says {want} ({total} frames x {mel.n_mels} mels, fp16): "
                             "the cache is incomplete or damaged")
        frames = np.memmap(path, dtype=np.float16, mode="r", shape=(max(1, total), mel.n_mels)) if total else np.zeros((0, mel.n_mels), np.float16)
        return cls(folder, mel, clips, frames, (mean, std), index)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def pad_value(self) -> float:
        """The log-mel of digital silence: what zero-padding the audio gives."""
        return math.log(self.mel.eps)

    def crops(self, idx: torch.Tensor, u: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Clips idx, each cropped to n_frames starting at fraction u of its free
        range (clips shorter than n_frames are placed at that fraction of the
        padding instead): [len(idx), 1, n_mels, n_frames] float32."""
        out = np.full((len(idx), n_frames, self.mel.n_mels), self.pad_value, dtype=np.float32)
        for k, (i, f) in enumerate(zip(idx.tolist(), u.tolist())):
            off, n = self.clips[i]
            start = int(f * (abs(n - n_frames) + 1))
            if n >= n_frames:
                out[k] = self.frames[off + start : off + start + n_frames]
            else:
                out[k, start : start + n] = self.frames[off : off + n]
        return torch.from_numpy(out).transpose(1, 2).unsqueeze(1)


# ---------------------------------------------------------------- data order
@functools.lru_cache(maxsize=2)
def _epoch_order(n_clips: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n_clips, generator=generator_for(seed, "order", epoch))


def global_batch(n_clips: int, batch_size: int, step: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip indices and crop fractions of the global batch at `step`: one
    shuffled pass over the clips per epoch (the tail that does not fill a
    batch is dropped), the order fixed by (seed, epoch)."""
    per_epoch = n_clips // batch_size
    if per_epoch == 0:
        raise DataError(f"only {n_clips} usable clips for batch_size {batch_size}; add audio or lower batch_size")
    epoch, k = divmod(step, per_epoch)
    perm = _epoch_order(n_clips, seed, epoch)
    idx = perm[k * batch_size : (k + 1) * batch_size]
    u = torch.rand(batch_size, generator=generator_for(seed, "crop", step), dtype=torch.float64)
    return idx, u
