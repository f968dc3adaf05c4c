"""Embed a corpus of audio files: the engine behind `hear-abt embed`.

A corpus of tens of thousands of files wants one command that can be killed
and restarted: outputs mirror the input tree, each is written atomically
(tmp + os.replace, so a killed run leaves no file that counts as done), and
`skip_existing` resumes. Worker processes decode and resample while the main
process embeds; clips of exactly equal length are embedded as one batch (no
padding, so a clip's result differs from its one-at-a-time result by
rounding at most). A bad file is reported and never stops the others.
"""
from __future__ import annotations

import itertools
import logging
import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from .model import ABTModel

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif")
FORMATS = ("npy", "npz")
LAYOUTS = ("mirror", "flat")
# Clips longer than this are embedded alone: batching buys nothing there, and
# holding several in the batching buffer would cost their whole length in RAM.
BATCH_MAX_SECONDS = 60.0


@dataclass(frozen=True)
class Job:
    """One input file and its output name (relative, no suffix) in the output folder."""

    src: Path
    key: PurePosixPath


def _audio_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file())


def read_list(source: str) -> list[str]:
    """Paths from a file list, one a line ("-": standard input); blank lines and # comments are ignored."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def list_jobs(inputs: Sequence[str | Path], listed: Sequence[str | Path] = (), layout: str = "mirror") -> tuple[
    list[Job], list[str]
]:
    """Jobs sorted by output name, and a message per input that holds no audio.

    A file given directly is written as <stem>.*; a folder's files mirror the
    folder (layout "mirror") or go flat as <stem>.* ("flat"); listed files
    mirror their paths below the deepest folder holding all of them. Raises
    ValueError when two inputs would write the same output.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    pairs: list[tuple[Path, PurePosixPath]] = []
    problems: list[str] = []
    for p in map(Path, inputs):
        if p.is_dir():
            files = _audio_in(p)
            if not files:
                problems.append(f"{p}: no audio files in this folder (looked for {', '.join(AUDIO_SUFFIXES)})")
            for f in files:
                rel = PurePosixPath(f.relative_to(p).as_posix()) if layout == "mirror" else PurePosixPath(f.name)
                pairs.append((f, rel.with_suffix("")))
        else:
            pairs.append((p, PurePosixPath(p.stem)))
    if listed:
        paths = [Path(s) for s in listed]
        root = Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))
        for p in paths:
            rel = p.resolve().relative_to(root).as_posix() if layout == "mirror" else p.name
            pairs.append((p, PurePosixPath(rel).with_suffix("")))
    seen: dict[Path, Job] = {}
    for src, key in pairs:
        seen.setdefault(src.resolve(), Job(src, key))  # the same file twice is embedded once
    jobs = sorted(seen.values(), key=lambda j: (str(j.key), str(j.src)))
    by_key: dict[PurePosixPath, list[Path]] = {}
    for j in jobs:
        by_key.setdefault(j.key, []).append(j.src)
    clashes = {k: v for k, v in by_key.items() if len(v) > 1}
    if clashes:
        listed_clashes = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in sorted(clashes.items()))
        raise ValueError(
            f"inputs with the same name would overwrite each other's outputs ({listed_clashes}); "
            "embed them into different --output folders, rename them, or use the mirrored layout"
        )
    return jobs, problems


def parse_shard(text: str | None, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """`I/N` (0 <= I < N), else torchrun's RANK and WORLD_SIZE when set, else (0, 1)."""
    env = os.environ if env is None else env
    if text is None and "RANK" in env and "WORLD_SIZE" in env:
        text = f"{env['RANK']}/{env['WORLD_SIZE']}"
    if text is None:
        return 0, 1
    try:
        i, n = (int(s) for s in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be I/N with integers, e.g. 0/4, got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


def shard(jobs: Sequence[Job], index: int, count: int) -> list[Job]:
    """Every count-th job from index on: a fixed share of the sorted list, disjoint across shards."""
    return list(jobs[index::count])


def output_files(out_dir: Path, key: PurePosixPath, fmt: str, timestamps: bool) -> list[Path]:
    """What a finished job leaves in out_dir; it counts as done only when all of them exist."""
    base = str(out_dir / key)
    if fmt == "npz":
        return [Path(f"{base}.npz")]
    names = [f"{base}.scene.npy"]
    if timestamps:
        names += [f"{base}.timestamps.npy", f"{base}.times_ms.npy"]
    return [Path(n) for n in names]


def is_done(out_dir: Path, job: Job, fmt: str, timestamps: bool) -> bool:
    return all(p.is_file() for p in output_files(out_dir, job.key, fmt, timestamps))


def partial_path(path: Path) -> Path:
    """The temporary name an output is written under before os.replace gives it its own."""
    return path.with_name(f".{path.name}.partial")


def write_outputs(outputs: dict[Path, Any]) -> None:
    """Write each array (.npy) or dict of arrays (.npz) under a temporary name, then
    rename them all into place: a kill at any point leaves no final name half-written."""
    for path, value in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial_path(path), "wb") as f:
            if isinstance(value, dict):
                np.savez(f, **value)
            else:
                np.save(f, value)
    for path in outputs:
        os.replace(partial_path(path), path)


def _seconds(n_samples: int, sr: int) -> str:
    s = n_samples / sr
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s:.0f} s"


class _Notes(logging.Handler):
    """Collects read_audio's INFO lines (down-mixed, resampled) so that a worker
    process can hand them back to the main process, which logs them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def decode(path: str, sample_rate: int, max_seconds: float) -> tuple[np.ndarray, list[str]]:
    """Mono float32 audio at sample_rate, as read_audio gives it, and read_audio's
    INFO lines. Files longer than max_seconds are refused from their header,
    before any decoding."""
    import soundfile as sf

    from . import audio_io

    try:
        info = sf.info(path)
    except Exception:  # noqa: BLE001 - read_audio below says what is wrong with the file
        info = None
    if info is not None and info.samplerate > 0 and info.frames / info.samplerate > max_seconds:
        raise audio_io.AudioReadError(
            f"{path}: {_seconds(info.frames, info.samplerate)} long, over the {max_seconds:g} s limit "
            "(--max-duration); split it into parts or raise the limit if memory allows "
            "(about 100 MB a minute of 48 kHz stereo while decoding)"
        )
    notes, logger = _Notes(), audio_io.log
    level, propagate = logger.level, logger.propagate
    logger.addHandler(notes)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        wav, _ = audio_io.read_audio(path, sample_rate)
    finally:
        logger.removeHandler(notes)
        logger.setLevel(level)
        logger.propagate = propagate
    return wav.numpy(), notes.lines


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # the cores go to the other workers and the model


@dataclass
class Summary:
    total: int = 0
    embedded: int = 0
    skipped: int = 0
    silent: int = 0
    audio_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def line(self, out_dir: Path) -> str:
        extra = [f"{len(self.failures)} failed"] if self.failures else []
        if self.skipped:
            extra.append(f"{self.skipped} already done, skipped")
        if self.silent:
            extra.append(f"{self.silent} silent")
        tail = f" ({'; '.join(extra)})" if extra else ""
        return f"embedded {self.embedded} of {self.total} files into {out_dir}{tail}"


class _Progress:
    """tqdm over files with audio-seconds/s; off when not on a terminal or quiet."""

    def __init__(self, total: int, quiet: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="file", desc="embedding", disable=True if quiet else None, smoothing=0.1)
        self.t0, self.audio_s = time.perf_counter(), 0.0

    def update(self, n: int, audio_s: float) -> None:
        self.audio_s += audio_s
        if not self.bar.disable:
            self.bar.set_postfix_str(f"{self.audio_s / max(1e-9, time.perf_counter() - self.t0):.0f} audio-s/s",
                                     refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def embed_batch(model: ABTModel, clips: Sequence[np.ndarray], fmt: str, timestamps: bool) -> list[dict[str, Any]]:
    """Equal-length clips -> per clip {"scene", and "embedding"/"times_ms" when wanted} (numpy).

    One frame pass serves both poolings (embed.pooled, as the HEAR API's
    scene_embeddings uses it); calling scene_embeddings and
    timestamp_embeddings would run it twice.
    """
    import torch

    from . import embed
    from .hear_api import _check_audio, _eval_mode

    want_ts = fmt == "npz" or timestamps
    x = _check_audio(torch.from_numpy(np.stack(clips)).to(model.device), model)
    with _eval_mode(model):
        scene, emb, ts = embed.pooled(model, embed.clip_frames(model, x), x.shape[1], timestamps=want_ts)
    scene = scene.cpu().numpy()
    out = []
    for i in range(len(clips)):
        r: dict[str, Any] = {"scene": scene[i]}
        if want_ts:
            r["embedding"], r["times_ms"] = emb[i].cpu().numpy(), ts.cpu().numpy()
        out.append(r)
    return out


def _outputs_of(out_dir: Path, job: Job, fmt: str, timestamps: bool, r: dict[str, Any]) -> dict[Path, Any]:
    paths = output_files(out_dir, job.key, fmt, timestamps)
    if fmt == "npz":
        # openl3's keys (embedding, timestamps in seconds), plus the scene embedding.
        return {paths[0]: {"embedding": r["embedding"], "timestamps": r["times_ms"].astype(np.float64) / 1000.0,
                           "scene": r["scene"]}}
    values = [r["scene"]] + ([r["embedding"], r["times_ms"]] if timestamps else [])
    return dict(zip(paths, values))


Decoded = tuple[np.ndarray, list[str]] | BaseException  # a clip and its log lines, or why it failed


def _inline(js: Iterable[Job], sr: int, max_seconds: float) -> Iterable[tuple[Job, Decoded]]:
    for j in js:
        try:
            yield j, decode(str(j.src), sr, max_seconds)
        except Exception as e:  # noqa: BLE001 - reported per file
            yield j, e


def _decoded(todo: Sequence[Job], sr: int, max_seconds: float, workers: int, batch_size: int) -> Iterable[tuple[Job, Decoded]]:
    """Each job with its decoded clip (or the error), in order; `workers` spawned
    processes decode ahead within a bounded window, and if one dies the rest
    are decoded here."""
    if workers == 0:
        yield from _inline(todo, sr, max_seconds)
        return
    import multiprocessing as mp
    from concurrent.futures.process import BrokenProcessPool

    window = 4 * workers + 2 * batch_size  # decoded clips in flight: bounded memory
    queue: deque[tuple[Job, Future]] = deque()
    it = iter(todo)
    rest: list[Job] = []

    def submit(j: Job) -> None:
        try:
            queue.append((j, pool.submit(decode, str(j.src), sr, max_seconds)))
        except BrokenProcessPool:
            rest.append(j)

    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init)
    try:
        for j in itertools.islice(it, window):
            submit(j)
        while queue:
            j, fut = queue.popleft()
            try:
                got: Decoded = fut.result()
            except BrokenProcessPool:
                # A worker died (out of memory, killed): this file is the likely cause; the
                # others are decoded here, one at a time.
                yield j, RuntimeError("a decoding worker died on this file (out of memory?)")
                rest = [q for q, _ in queue] + rest + list(it)
                queue.clear()
                break
            except Exception as e:  # noqa: BLE001 - reported per file
                got = e
            nxt = next(it, None)
            if nxt is not None:
                submit(nxt)
            yield j, got
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if rest:
        log.warning("decoding the remaining %d files in the main process", len(rest))
    yield from _inline(rest, sr, max_seconds)


def embed_corpus(
    model: ABTModel,
    jobs: Sequence[Job],
    out_dir: str | Path,
    *,
    fmt: str = "npy",
    timestamps: bool = False,
    batch_size: int = 16,
    workers: int = 0,
    skip_existing: bool = False,
    max_seconds: float = 3600.0,
    quiet: bool = True,
    on_error: Callable[[str], None] | None = None,
) -> Summary:
    """Embed every job into out_dir; returns the counts. Bad files are reported
    through on_error (default: logging.error) and counted, never raised."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = on_error or (lambda msg: log.error("skipped: %s", msg))
    summary = Summary(total=len(jobs))
    todo = [j for j in jobs if not (skip_existing and is_done(out_dir, j, fmt, timestamps))]
    summary.skipped = len(jobs) - len(todo)
    progress = _Progress(len(jobs), quiet)
    progress.update(summary.skipped, 0.0)
    sr = model.sample_rate
    groups: dict[int, list[tuple[Job, np.ndarray]]] = {}

    def fail(msg: str) -> None:
        summary.failures.append(msg)
        report(msg)
        progress.update(1, 0.0)

    def flush(n: int) -> None:
        batch = groups.pop(n)
        try:
            results = embed_batch(model, [w for _, w in batch], fmt, timestamps)
        except ValueError as e:  # a clip the HEAR checks refuse (e.g. unscaled PCM): one at a time, to name it
            if len(batch) == 1:
                fail(f"{batch[0][0].src}: {e}")
                return
            for job, wav in batch:
                groups[n] = [(job, wav)]
                flush(n)
            return
        for (job, wav), r in zip(batch, results):
            write_outputs(_outputs_of(out_dir, job, fmt, timestamps, r))
            summary.embedded += 1
            summary.audio_seconds += len(wav) / sr
            progress.update(1, len(wav) / sr)

    def take(job: Job, wav: np.ndarray) -> None:
        if not wav.any():
            summary.silent += 1
            log.warning("%s: silent (every sample is zero); embedded anyway", job.src)
        n = len(wav)
        groups.setdefault(n, []).append((job, wav))
        if len(groups[n]) >= batch_size or n > BATCH_MAX_SECONDS * sr:
            flush(n)
        elif sum(map(len, groups.values())) > 2 * batch_size:  # bound the buffer: the oldest length goes
            flush(next(iter(groups)))

    try:
        for job, got in _decoded(todo, sr, max_seconds, workers, batch_size):
            if isinstance(got, BaseException):
                text = str(got)
                fail(text if text.startswith(str(job.src)) else f"{job.src}: {type(got).__name__}: {text}")
            else:
                wav, notes = got
                for line in notes:
                    logging.getLogger("hear_abt.audio_io").info("%s", line)
                take(job, wav)
        while groups:
            flush(next(iter(groups)))
    finally:
        progress.close()
    return summary
