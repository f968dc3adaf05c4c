"""Building the log-mel cache: every core decoding, resumable after a kill.

A build lives in `<key>.building/` beside its final folder and is renamed
into place only when complete, so readers never see half a cache. It appends
log-mels to one `mels.f16` (the final format, no copy at the end) and, after
each shard of SHARD_FILES files, fsyncs the data and writes a small JSON
record of that shard atomically (its kept clips with their frame counts and
per-clip sums, its skipped files, the byte length of mels.f16 so far). A
rerun after SIGKILL truncates mels.f16 to the last recorded shard and decodes
only the files after it; the finished cache is byte-identical to an
uninterrupted build, because the normalisation statistics are summed in file
order from the recorded per-clip sums.

A partial build carries an owner record (host, pid, heartbeat) and a lock:
one left by a dead process of this host is taken over (its finished shards
kept); one of another host is taken over once its heartbeat is older than
STALE_AFTER_S, and until then named in an error with the command that
removes it.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shlex
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..cores import usable_cores
from ..errors import DataError, HearAbtError
from ..frontend import LogMel, MelConfig, clip_sums, norm_stats_from_sums
from . import distributed as D
from .data import (
    CACHE_VERSION,
    SILENCE_PEAK,
    CacheError,
    MelCache,
    cache_key,
    default_cache_root,
    list_audio,
    log_mel_chunked,
)

log = logging.getLogger(__name__)

SHARD_FILES = 512  # files per completion record
HEARTBEAT_S = 30.0  # how often a running build refreshes its owner record
STALE_AFTER_S = 900.0  # another host's build whose heartbeat is older than this is taken over
BUILDING = ".building"
PROGRESS = "progress"
BOOKKEEPING = ("build.json", "owner.json", "lock")  # with PROGRESS: removed once the cache is in place


class CacheBuildBusy(HearAbtError, RuntimeError):
    """Another live process is building the same cache."""


def resolve_workers(workers: int) -> int:
    """workers < 0 means one per core this process may use; 0 decodes in this process."""
    return usable_cores() if workers < 0 else int(workers)


# ---------------------------------------------------------------- decoding
class _DecodeFiles(torch.utils.data.Dataset):
    """Item k -> (file index, log-mel [frames, n_mels] fp16 or None, reason,
    (values, sum, sum of squares) in float64): the sums are done here, in the
    decoding process, so the main process only writes."""

    def __init__(self, files: Sequence[str], mel: MelConfig, start: int = 0):
        self.files, self.mel, self.start = list(files), mel, int(start)
        self.lm: LogMel | None = None

    def __len__(self) -> int:
        return len(self.files) - self.start

    def __getitem__(self, k: int):
        from ..audio_io import AudioReadError, read_audio

        i = self.start + k
        if self.lm is None:
            self.lm = LogMel(self.mel)
        try:
            wav, _ = read_audio(self.files[i], self.mel.sample_rate)
        except AudioReadError as e:
            return i, None, str(e), None
        except Exception as e:  # a decoder crash on one file must not stop the build
            return i, None, f"{self.files[i]}: {type(e).__name__}: {e}", None
        if wav.numel() == 0 or float(wav.abs().max()) < SILENCE_PEAK:
            return i, None, f"{self.files[i]}: silent (peak below {SILENCE_PEAK:g})", None
        with torch.no_grad():
            mel = log_mel_chunked(self.lm, wav).T.contiguous().to(torch.float16)
        return i, mel.numpy(), "", clip_sums(mel)


def _identity(x):
    return x


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # decoding processes must not each claim every core


# ---------------------------------------------------------------- ownership
def building_path(folder: Path) -> Path:
    return folder.with_name(folder.name + BUILDING)


def _atomic_json(path: Path, obj: Any, fsync: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_builds(folder: Path) -> None:
    """Delete the `<key>.building-<host>-<pid>` copies that killed processes
    of this host left (the layout of earlier versions, which cannot resume);
    those of another host are named with the command that removes them."""
    host = socket.gethostname()
    for p in folder.parent.glob(f"{folder.name}.building-*"):
        h, _, pid = p.name.rpartition(".building-")[2].rpartition("-")
        if not pid.isdigit():
            continue
        if h != host:
            log.warning("%s is a partial cache build of host %s (pid %s); if no build runs there any more, "
                        "remove it: rm -rf '%s'", p, h, pid, p)
        elif not _pid_alive(int(pid)):
            log.info("removing %s, left by an interrupted cache build", p)
            shutil.rmtree(p, ignore_errors=True)


class _Ownership:
    """The lock and owner record of a `<key>.building` folder while this
    process builds in it; a daemon thread refreshes the heartbeat."""

    def __init__(self, tmp: Path, stale_after_s: float):
        self.tmp, self.owner, self.stale_after_s = tmp, tmp / "owner.json", stale_after_s
        self.me = {"host": socket.gethostname(), "pid": os.getpid()}
        self.lock_fd = os.open(tmp / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.lock_fd)
            raise CacheBuildBusy(self._busy_message(_read_json(self.owner) or {}, "holds its lock")) from None
        prev = _read_json(self.owner)
        if prev is None:  # claim a fresh folder exclusively (O_EXCL holds on NFS, flock may not)
            try:
                os.close(os.open(self.owner, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            except FileExistsError:  # claimed meanwhile, or an owner record cut short: its age decides
                prev = _read_json(self.owner) or {"host": "?", "pid": "?", "heartbeat": _mtime(self.owner)}
        if prev and (prev.get("host"), prev.get("pid")) != (self.me["host"], self.me["pid"]):
            age = time.time() - float(prev.get("heartbeat", 0))
            if prev.get("host") != self.me["host"] and age < stale_after_s:
                self.close()
                raise CacheBuildBusy(self._busy_message(prev, f"refreshed it {age:.0f} s ago"))
            if prev.get("host") != self.me["host"]:
                why = f"sent no heartbeat for {age:.0f} s"
            else:
                why = "released its lock" if str(prev.get("pid")).isdigit() and _pid_alive(int(prev["pid"])) else "is dead"
            log.warning("taking over the partial cache build %s: its builder (pid %s on %s) %s; keeping its finished shards",
                        tmp, prev.get("pid"), prev.get("host"), why)
        self.beat()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="cache-build-heartbeat")
        self.thread.start()

    def _busy_message(self, prev: dict, why: str) -> str:
        return (f"{self.tmp} is being built by pid {prev.get('pid', '?')} on host {prev.get('host', '?')}, which {why}. "
                f"Wait for it to finish; if that process is dead, remove the partial build with: rm -rf '{self.tmp}' "
                f"(a build of another host is taken over automatically once its heartbeat is {self.stale_after_s:.0f} s old)")

    def beat(self) -> None:
        _atomic_json(self.owner, {**self.me, "heartbeat": time.time()})

    def _run(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                self.beat()
            except OSError:  # the folder was renamed into place or removed
                return

    def stop_heartbeat(self) -> None:
        if hasattr(self, "stop"):
            self.stop.set()
            self.thread.join()

    def close(self) -> None:
        self.stop_heartbeat()
        os.close(self.lock_fd)


# ---------------------------------------------------------------- shards
def _finished_shards(tmp: Path, shard_files: int, n_files: int) -> list[dict]:
    """The consecutive shard records from shard 0 that fit this build, with
    mels.f16 truncated to the end of the last; everything after is dropped."""
    plan = {"cache_version": CACHE_VERSION, "shard_files": shard_files, "n_files": n_files}
    prog = tmp / PROGRESS
    if _read_json(tmp / "build.json") != plan:  # a fresh folder, or another build's layout
        shutil.rmtree(prog, ignore_errors=True)
        (tmp / "mels.f16").unlink(missing_ok=True)
        prog.mkdir(parents=True)
        _atomic_json(tmp / "build.json", plan)
        return []
    prog.mkdir(exist_ok=True)
    records: list[dict] = []
    while True:
        rec = _read_json(prog / f"shard-{len(records):06d}.json")
        if rec is None or rec.get("shard") != len(records):
            break
        records.append(rec)
    for p in prog.glob("shard-*.json"):
        if int(p.stem.split("-")[1]) >= len(records):
            p.unlink()
    data = tmp / "mels.f16"
    end = records[-1]["end_bytes"] if records else 0
    if not data.is_file() or data.stat().st_size < end:  # records without their data: start again
        shutil.rmtree(prog, ignore_errors=True)
        prog.mkdir()
        data.unlink(missing_ok=True)
        return []
    with open(data, "r+b") as f:
        f.truncate(end)
    return records


def build_cache(files: Sequence[str], mel: MelConfig, folder: Path, workers: int = -1,
                shard_files: int = SHARD_FILES, stale_after_s: float = STALE_AFTER_S) -> None:
    """Decode every file into `folder`, resuming the finished shards of an
    earlier interrupted build (see the module docstring). workers < 0: one
    decoding process per core; 0: decode in this process."""
    from tqdm import tqdm

    folder = Path(folder)
    _remove_stale_builds(folder)
    tmp = building_path(folder)
    tmp.mkdir(parents=True, exist_ok=True)
    owner = _Ownership(tmp, stale_after_s)
    try:
        if (folder / "index.json").is_file():  # finished by another process while we waited
            shutil.rmtree(tmp, ignore_errors=True)
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the main process only writes: leave the cores to the decoders
        try:
            records = _finished_shards(tmp, shard_files, len(files))
            start = len(records) * shard_files
            if records:
                log.info("resuming the cache build in %s: %d of %d files already done", tmp, min(start, len(files)), len(files))
            if start < len(files):
                _decode_shards(files, mel, tmp, start, shard_files, resolve_workers(workers), records, tqdm)
            _assemble(files, mel, folder, tmp, records)
        finally:
            torch.set_num_threads(threads)
        owner.stop_heartbeat()
        if folder.exists():  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
            return
        # Renamed with its bookkeeping and the lock still held, so no process can
        # mistake the finished build for an abandoned one; then tidied.
        os.replace(tmp, folder)
        shutil.rmtree(folder / PROGRESS, ignore_errors=True)
        for name in BOOKKEEPING:
            (folder / name).unlink(missing_ok=True)
    finally:
        owner.close()


def _decode_shards(files, mel, tmp: Path, start: int, shard_files: int, workers: int, records: list[dict], tqdm) -> None:
    loader = torch.utils.data.DataLoader(
        _DecodeFiles(files, mel, start), batch_size=None, num_workers=max(0, workers), collate_fn=_identity,
        worker_init_fn=_one_thread if workers > 0 else None,
    )
    rec: dict[str, Any] = {}
    with open(tmp / "mels.f16", "ab") as out:
        for i, m, reason, sums in tqdm(loader, total=len(files), initial=start, desc="log-mel cache", unit="file", mininterval=2):
            if not rec:
                rec = {"shard": len(records), "first": i, "kept": [], "skipped": []}
            if m is None:
                rec["skipped"].append([i, reason])
                log.warning("skipping %s", reason)
            else:
                out.write(m.tobytes())
                rec["kept"].append([i, int(m.shape[0]), *sums])
            if i + 1 == len(files) or (i + 1) % shard_files == 0:
                out.flush()
                os.fsync(out.fileno())
                rec.update(stop=i + 1, end_bytes=out.tell())
                _atomic_json(tmp / PROGRESS / f"shard-{rec['shard']:06d}.json", rec, fsync=True)
                records.append(rec)
                rec = {}


def _assemble(files, mel: MelConfig, folder: Path, tmp: Path, records: list[dict]) -> None:
    """Write the clip table, file list, report and index (the format
    MelCache.open reads) from the shard records."""
    kept = [k for r in records for k in r["kept"]]
    skipped = [(files[i], reason) for r in records for i, reason in r["skipped"]]
    try:
        mean, std = norm_stats_from_sums([k[2:] for k in kept])
    except ValueError:
        raise DataError(
            f"none of the {len(files)} files gave usable audio ({len(skipped)} skipped; first: "
            f"{skipped[0][1] if skipped else '-'}). Check --data."
        ) from None
    frames = np.asarray([k[1] for k in kept], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(frames)[:-1]]).astype(np.int64)
    clips = np.stack([offsets, frames], axis=1).reshape(-1, 2)
    total = int(frames.sum())
    if (tmp / "mels.f16").stat().st_size != total * mel.n_mels * 2:
        raise CacheError(f"{tmp / 'mels.f16'} does not match its shard records; remove {tmp} and build again")
    np.save(tmp / "clips.npy", clips)
    (tmp / "files.txt").write_text("".join(files[k[0]] + "\n" for k in kept), encoding="utf-8")
    report = {"listed": len(files), "kept": len(kept), "skipped": len(skipped),
              "skipped_files": [{"path": p, "reason": r} for p, r in skipped]}
    (tmp / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    index = {
        "cache_version": CACHE_VERSION,
        "key": folder.name,
        "mel": mel.to_dict(),
        "n_clips": len(kept),
        "total_frames": total,
        "norm_stats": [mean, std],
        "listed": len(files),
        "skipped": len(skipped),
    }
    (tmp / "index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")


# ---------------------------------------------------------------- opening
def open_or_build_cache(files: Sequence[str], mel: MelConfig, root: str | Path, workers: int = -1, build: bool = True) -> MelCache:
    """The cache for these files and this MelConfig, built when missing."""
    folder = Path(root).expanduser() / cache_key(files, mel)
    if folder.exists():
        try:
            cache = MelCache.open(folder)
            if cache.index.get("key", folder.name) != folder.name:
                raise CacheError(f"{folder / 'index.json'} has the key {cache.index['key']}, not its folder's {folder.name}")
        except CacheError as e:
            if not build:
                raise
            log.warning("%s; rebuilding the cache", e)
            aside = folder.with_name(f"{folder.name}.invalid-{socket.gethostname()}-{os.getpid()}")
            os.replace(folder, aside)
            shutil.rmtree(aside, ignore_errors=True)
    if not (folder / "index.json").is_file():
        if not build:
            raise FileNotFoundError(folder)
        log.info("building the log-mel cache of %d files in %s", len(files), folder)
        build_cache(files, mel, folder, workers)
    cache = MelCache.open(folder)
    log.info("log-mel cache %s: %d clips, %d skipped", folder, len(cache), cache.index["skipped"])
    return cache


# ---------------------------------------------------------------- training
def prepare_command(cfg) -> str:
    """The command that builds the cache a TrainConfig trains on."""
    parts = ["python", "-m", "hear_abt.train", "--prepare", "--data", cfg.data]
    if cfg.cache_dir:
        parts += ["--cache-dir", cfg.cache_dir]
    if dict(cfg.mel) != MelConfig().to_dict():
        parts += ["--set", "mel=" + json.dumps(cfg.mel, separators=(",", ":"))]
    return " ".join(shlex.quote(str(p)) for p in parts)


def _open_here(cfg, build: bool) -> MelCache:
    """The cache of cfg on this machine; `data` may itself be a built cache
    folder (one holding index.json), e.g. copied to a machine without the audio."""
    if (Path(cfg.data) / "index.json").is_file():
        try:
            cache = MelCache.open(cfg.data)
        except CacheError as e:
            raise DataError(f"--data {cfg.data}: {e}") from None
        if cache.mel != cfg.mel_config:
            raise DataError(f"{cfg.data} was built with {cache.mel}, the config asks for {cfg.mel_config}")
        return cache
    files = list_audio(cfg.data)
    root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_root()
    return open_or_build_cache(files, cfg.mel_config, root, cfg.workers, build=build)


def open_training_cache(cfg, ctx: D.DistContext) -> MelCache:
    """The cache a run trains on. One process builds it when missing. Under
    torchrun nothing is built (every other process would wait at a barrier
    for the whole build, past the process group's timeout): every process
    opens its node's copy, the processes exchange a small status, and a
    missing or damaged copy on any node stops every process at once with a
    message naming the nodes and the --prepare command; copies whose key or
    contents differ between nodes stop the run too."""
    if not ctx.distributed:
        return _open_here(cfg, build=True)
    status: dict[str, Any] = {"host": socket.gethostname(), "rank": ctx.rank, "prepare": prepare_command(cfg)}
    cache = None
    try:
        cache = _open_here(cfg, build=False)
        ix = cache.index
        status["copy"] = [ix.get("key", cache.folder.name), int(ix["n_clips"]), int(ix["total_frames"]), list(cache.norm_stats)]
    except FileNotFoundError as e:
        status["error"] = f"no log-mel cache at {e.filename or e}"
    except (OSError, HearAbtError) as e:
        status["error"] = str(e)
    everyone = D.all_gather_object(status, ctx)
    bad: dict[tuple[str, str], list[int]] = {}
    for s in everyone:
        if "error" in s:
            bad.setdefault((s["host"], s["error"]), []).append(s["rank"])
    if bad:
        lines = "\n".join(f"  node {h} (rank{'s' if len(r) > 1 else ''} {', '.join(map(str, sorted(r)))}): {err}"
                          for (h, err), r in bad.items())
        raise DataError(
            f"the log-mel cache is not ready on every node; under torchrun the trainer does not build it.\n{lines}\n"
            "Build it on each node named above (or once on a shared disk, then copy it to each node) with:\n  "
            + "\n  ".join(dict.fromkeys(s["prepare"] for s in everyone if "error" in s))
        )
    copies: dict[str, list[str]] = {}
    for s in everyone:
        copies.setdefault(json.dumps(s["copy"]), []).append(s["host"])
    if len(copies) > 1:
        lines = "\n".join(f"  key {json.loads(c)[0]}, {json.loads(c)[1]} clips, {json.loads(c)[2]} frames, "
                          f"norm stats {json.loads(c)[3]}: nodes {', '.join(sorted(set(h)))}" for c, h in copies.items())
        raise DataError("the nodes' log-mel caches differ (every node must train on the same cache):\n" + lines +
                         f"\nBuild them from the same files and settings with: {prepare_command(cfg)}, or copy one node's cache to the others.")
    return cache
