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

Crops are read with one pread each, into fp16 buffers; loader.CropLoader
reads the coming steps' crops while a step trains.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import json
import logging
import math
import os
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
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
        # Row by row: a list of every parsed row took 0.7 GB at AudioSet's 2 million rows (measured).
        with data.open(newline="", encoding="utf-8") as f:
            rows = csv.reader(f, delimiter="\t" if data.suffix.lower() == ".tsv" else ",")
            first = next(rows, None)
            if first is None:
                raise DataError(f"{data}: empty manifest")
            header = [h.strip().lower() for h in first]
            col = next((header.index(k) for k in ("path", "file", "filename") if k in header), None)
            body = rows if col is not None else itertools.chain([first], rows)
            col = col or 0
            base = os.path.abspath(data.parent)
            files = [_joined(base, r[col].strip()) for r in body if r and r[col].strip()]
        if not files:
            raise DataError(f"{data}: the manifest lists no files")
        return files
    raise DataError(f"--data {data}: not a folder or a .csv/.tsv manifest")


def _joined(base: str, path: str) -> str:
    """os.path.normpath(os.path.join(base, path)) for a normalised absolute
    base, without normpath's cost for the plain relative paths of a manifest."""
    if os.sep != "/" or path.startswith(("/", ".")) or "/." in path or "//" in path or path.endswith("/") or base == "/":
        return os.path.normpath(os.path.join(base, path))
    return f"{base}/{path}"


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
    _fd: int | None = field(default=None, repr=False, compare=False)
    _fd_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

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

    def crops(self, idx: torch.Tensor, u: torch.Tensor, n_frames: int, half: bool = False,
              out: torch.Tensor | None = None, pool: Executor | None = None) -> torch.Tensor:
        """Clips idx, each cropped to n_frames starting at fraction u of its free
        range (clips shorter than n_frames are placed at that fraction of the
        padding instead).

        half=False: [len(idx), 1, n_mels, n_frames] float32, padded with pad_value.
        half=True: [len(idx), n_frames, n_mels] float16 as stored (into `out` when
        given, e.g. pinned memory), padded with -inf: pad_value has no exact fp16
        form, so a reader converts to fp32 and then puts pad_value where -inf is
        (expand_half does); both give the same bits.

        Each crop is one pread of its bytes (no read-ahead: the file is opened
        with POSIX_FADV_RANDOM). When the first reads show that the batch
        comes from the disk, `pool` runs the rest on several threads, so that
        many reads are in flight. The loader calls this positionally, once per
        step and in step order, after will_read has asked the kernel for them."""
        b, nm = len(idx), self.mel.n_mels
        if out is None:
            out = torch.empty((b, n_frames, nm), dtype=torch.float16)
        if out.shape != (b, n_frames, nm) or out.dtype != torch.float16 or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous float16 tensor of shape {(b, n_frames, nm)}, not {tuple(out.shape)} {out.dtype}")
        if b:
            self._read(np.asarray(idx, dtype=np.int64), np.asarray(u, dtype=np.float64), n_frames, out.numpy(), pool)
        return out if half else expand_half(out, self.pad_value, self.padded_rows(idx, n_frames))

    def padded_rows(self, idx: torch.Tensor, n_frames: int) -> list[int]:
        """The rows of crops(idx, ..., n_frames) that hold padding (clips shorter than a crop)."""
        return np.flatnonzero(self.clips[np.asarray(idx, dtype=np.int64), 1] < n_frames).tolist()

    def _plan(self, idx: np.ndarray, u: np.ndarray, n_frames: int) -> tuple[np.ndarray, list, list, list]:
        """Per crop: whether the clip fills it, its bytes' file offset and
        length, and where they go in the [b, n_frames, n_mels] buffer."""
        off, n = self.clips[idx, 0], self.clips[idx, 1]
        start = (u * (np.abs(n - n_frames) + 1)).astype(np.int64)  # as int(f * (|n - n_frames| + 1)) per clip
        long_ = n >= n_frames
        row = n_frames * self.mel.n_mels * 2
        frame = self.mel.n_mels * 2
        src = ((off + np.where(long_, start, 0)) * frame).tolist()
        nbytes = (np.where(long_, n_frames, n) * frame).tolist()
        dst = (np.arange(len(idx)) * row + np.where(long_, 0, start) * frame).tolist()
        return long_, src, nbytes, dst

    def will_read(self, idx: torch.Tensor, u: torch.Tensor, n_frames: int) -> None:
        """Ask the kernel to start reading these crops into the page cache
        (POSIX_FADV_WILLNEED: it returns at once, the reads go on
        asynchronously, as many at a time as the disk queue takes), so that a
        later crops() of them finds them in memory. Changes no result."""
        if not hasattr(os, "posix_fadvise") or not len(idx):
            return
        _, src, nbytes, _ = self._plan(np.asarray(idx, dtype=np.int64), np.asarray(u, dtype=np.float64), n_frames)
        fd = self._reader()
        for a, n in zip(src, nbytes):
            os.posix_fadvise(fd, a, n, os.POSIX_FADV_WILLNEED)

    def _read(self, idx: np.ndarray, u: np.ndarray, n_frames: int, buf: np.ndarray, pool: Executor | None) -> None:
        long_, src, nbytes, dst = self._plan(idx, u, n_frames)
        row = n_frames * self.mel.n_mels * 2
        flat = buf.reshape(-1).view(np.uint8)
        if not long_.all():  # the padding: -inf everywhere outside the copied frames
            for k in np.flatnonzero(~long_).tolist():
                flat[k * row : dst[k]].view(np.float16)[:] = -np.inf
                flat[dst[k] + nbytes[k] : (k + 1) * row].view(np.float16)[:] = -np.inf
        fd, mv = self._reader(), memoryview(flat)
        jobs = [(fd, mv, src, nbytes, dst, lo, min(len(src), lo + READ_CHUNK)) for lo in range(0, len(src), READ_CHUNK)]
        t = time.perf_counter()
        _pread_rows(*jobs[0])
        # From the page cache a crop takes microseconds and threads only add overhead; from the disk
        # (a tenth of a millisecond or more) the rest of the batch goes to the pool, many reads at once.
        if pool is not None and (time.perf_counter() - t) > FROM_DISK_S * (jobs[0][6] - jobs[0][5]):
            for f in [pool.submit(_pread_rows, *j) for j in jobs[1:]]:
                f.result()
        else:  # from the page cache a slice copy of the memmap costs less than a pread (2x, measured)
            self._copy_mapped(buf, src, nbytes, dst, jobs[0][6])

    def _copy_mapped(self, buf: np.ndarray, src: list, nbytes: list, dst: list, lo: int) -> None:
        """Crops lo.. of a _plan copied from the memmap into buf. The file's size
        is checked first: a memmap read past a truncated file's end is a SIGBUS,
        not an exception."""
        if lo >= len(src):
            return
        end = max(a + n for a, n in zip(src[lo:], nbytes[lo:]))
        if os.fstat(self._reader()).st_size < end:
            raise CacheError(f"mels.f16 ends before byte {end}: the cache is truncated")
        frame = self.mel.n_mels * 2
        rows = buf.reshape(-1, self.mel.n_mels)
        for a, n, d in zip(src[lo:], nbytes[lo:], dst[lo:]):
            rows[d // frame : (d + n) // frame] = self.frames[a // frame : (a + n) // frame]

    def _reader(self) -> int:
        """A descriptor of mels.f16 for pread, opened once, without read-ahead."""
        with self._fd_lock:
            if self._fd is None:
                fd = os.open(self.folder / "mels.f16", os.O_RDONLY)
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                self._fd = fd
            return self._fd

    def close(self) -> None:
        """Close the read descriptor (the memmap stays usable)."""
        with self._fd_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


READ_CHUNK = 4  # crops per task handed to a read pool
FROM_DISK_S = 30e-6  # a crop read slower than this came from the disk, not the page cache
CPU_GRAIN = 32768  # elements: torch runs smaller element-wise ops on the calling thread


def _pread_rows(fd: int, mv: memoryview, src: list, nbytes: list, dst: list, lo: int, hi: int) -> None:
    for k in range(lo, hi):
        want, got = nbytes[k], os.preadv(fd, [mv[dst[k] : dst[k] + nbytes[k]]], src[k])
        while got < want:  # a short read: only at the end of a truncated file, or on a signal
            more = os.preadv(fd, [mv[dst[k] + got : dst[k] + want]], src[k] + got)
            if more <= 0:
                raise CacheError(f"mels.f16 ends before byte {src[k] + want}: the cache is truncated")
            got += more


def expand_half(x: torch.Tensor, pad_value: float, padded: Sequence[int] | None = None) -> torch.Tensor:
    """crops(half=True)'s [b, frames, n_mels] fp16 (on any device) -> the
    [b, 1, n_mels, frames] fp32 view crops(half=False) returns, bit for bit.
    padded: the rows that may hold padding (MelCache.padded_rows), when known;
    the others are only converted."""
    if x.device.type == "cpu":
        # In pieces below torch's grain size, so each copy stays on this thread: on a busy machine a
        # parallel region per batch cost 10-30 ms against 1.5 ms (128 x 96 x 64, 2 threads, measured).
        y = torch.empty(x.shape, dtype=torch.float32)
        rows = max(1, CPU_GRAIN // max(1, x[0].numel())) if len(x) else 1
        for r in range(0, len(x), rows):
            y[r : r + rows].copy_(x[r : r + rows])
    else:
        y = x.float()
    if padded is None:
        y.masked_fill_(torch.isneginf(y), pad_value)
    elif y.device.type == "cpu":
        for r in padded:
            y[r].masked_fill_(torch.isneginf(y[r]), pad_value)
    elif len(padded):
        rows = torch.as_tensor(padded, dtype=torch.long, device=y.device)
        part = y[rows]
        y[rows] = part.masked_fill_(torch.isneginf(part), pad_value)
    return y.transpose(1, 2).unsqueeze(1)


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
