"""A run folder's training state: where it lives, how it is saved and read
back, and which one a resumed run continues from.

A run keeps its two newest states (state.pt, state.prev.pt), each written
completely before it replaces anything and carrying a digest of its content,
so a kill or a full disk at any moment leaves a state that validates, and a
state whose bytes changed on disk is refused by name instead of resumed.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_torch_save, content_digest, fsync_dir, torch_load_untrusted
from ..errors import ConfigError, HearAbtError, TrainError
from . import distributed as D
from .config import TrainConfig

log = logging.getLogger(__name__)

STATE_FORMAT = "hear-abt-train-state"
STATE_VERSION = 1
# Keys that may differ when resuming (they do not change what is computed).
RESUMABLE_OVERRIDES = {"steps", "epochs", "device", "log_every", "plot_every", "ckpt_every", "max_bad_steps", "workers", "run_dir", "data", "cache_dir",
                       "probe_tasks", "probe_every"}
STATE_NAMES = ("state.pt", "state.prev.pt")  # the newest state, and the one before it
RUN_ID_NAME = "run_id"
# Temporary files a killed process can leave in a run folder.
LEFTOVERS = ("..state.pt.new.*.tmp", ".state.pt.new", ".state.prev.pt.link", ".encoder.pt.*.tmp", ".log.csv.tmp", ".config.json.tmp")


class StateError(HearAbtError, ValueError):
    """A training-state file that cannot be trusted (truncated, corrupt, another run's)."""


def state_path(run_dir: str | Path) -> Path:
    """The newest training state of a run (the one before it is state.prev.pt)."""
    return Path(run_dir) / STATE_NAMES[0]


def state_paths(run_dir: str | Path) -> list[Path]:
    """Every state file a run keeps, newest first."""
    return [Path(run_dir) / n for n in STATE_NAMES]


def has_state(run_dir: str | Path) -> bool:
    return any(p.exists() for p in state_paths(run_dir))


def read_run_id(run_dir: str | Path) -> str | None:
    p = Path(run_dir) / RUN_ID_NAME
    return p.read_text(encoding="utf-8").strip() or None if p.is_file() else None


def load_state(path: str | Path, run_id: str | None = None) -> dict[str, Any]:
    """Read and check one state file; StateError (naming the file) when it is
    cut short, has bytes changed on disk, or belongs to another run."""
    path = Path(path)
    if not path.is_file():
        raise StateError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise StateError(f"{path} is truncated or corrupt (not a complete torch.save archive, {path.stat().st_size} bytes)")
    try:
        state = torch_load_untrusted(path)
    except Exception as e:  # noqa: BLE001 - any failure to read means a bad file
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        raise StateError(f"{path} is corrupt and cannot be read: {type(e).__name__}: {msg[:300]}") from None
    if not (isinstance(state, dict) and state.get("format") == STATE_FORMAT):
        raise StateError(f"{path} is not a hear-abt training state")
    if state.get("version") != STATE_VERSION:
        raise StateError(f"{path}: training-state version {state.get('version')} (this hear-abt reads {STATE_VERSION})")
    digest = state.pop("digest", None)
    if digest is not None and content_digest(state) != digest:
        raise StateError(f"{path} is corrupt: its contents do not match the digest stored when it was written "
                         "(bytes changed on disk)")
    if run_id is not None and state.get("run_id") not in (None, run_id):
        raise StateError(f"{path} belongs to another run (run id {state.get('run_id')}; "
                         f"this run folder's {RUN_ID_NAME} file says {run_id})")
    return state


def load_newest_state(run_dir: str | Path, quarantine: bool = False) -> tuple[dict[str, Any], Path] | None:
    """The newest state of the run that validates, and its path; None when the
    run has no state file at all. Files that fail are named in a warning and,
    with quarantine=True, renamed to `<name>.bad-<time>` so that the next save
    cannot rotate them over the good one. When every state file fails it
    raises TrainError with their errors: never a silent restart from step 0."""
    run_id = read_run_id(run_dir)
    bad: list[tuple[Path, str]] = []
    found = None
    for p in state_paths(run_dir):
        if not p.exists():
            continue
        try:
            found = (load_state(p, run_id), p)
            break
        except StateError as e:
            bad.append((p, str(e)))
    if found is None and not bad:
        return None
    if found is None:
        raise TrainError("no usable training state in {}:\n  {}\nMove these files away to start the run again from "
                         "step 0, or resume another copy.".format(run_dir, "\n  ".join(m for _, m in bad)))
    for p, msg in bad:
        aside = p.with_name(f"{p.name}.bad-{time.strftime('%Y%m%dT%H%M%S')}") if quarantine else None
        if aside is not None:
            os.replace(p, aside)
        warning = f"{msg}; resuming from {found[1]} (step {found[0]['step']}) instead" + (f"; moved the bad file to {aside}" if aside else "")
        log.warning(warning)
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    return found


def write_state(state: dict[str, Any], run_dir: str | Path) -> Path:
    """Save a training state, keeping the previous one: the new state is written
    completely (temporary file, fsync), then state.pt becomes state.prev.pt (a
    hard link, so state.pt never goes missing) and the new file is renamed to
    state.pt. A kill or a full disk at any moment leaves the earlier states
    intact, and the digest inside lets a reader detect later corruption."""
    cur, prev = state_paths(run_dir)
    state = {**state, "digest": content_digest(state)}
    tmp = cur.with_name(".state.pt.new")
    atomic_torch_save(state, tmp)
    if cur.exists():
        link_tmp = prev.with_name(".state.prev.pt.link")
        link_tmp.unlink(missing_ok=True)
        try:
            os.link(cur, link_tmp)
            os.replace(link_tmp, prev)
        except OSError:  # no hard links on this filesystem: a brief moment without state.pt
            os.replace(cur, prev)
    os.replace(tmp, cur)
    fsync_dir(cur.parent)
    return cur


def clean_leftovers(run_dir: Path) -> None:
    """Remove temporary files an earlier killed process left behind."""
    for pattern in LEFTOVERS:
        for p in run_dir.glob(pattern):
            p.unlink(missing_ok=True)


def atomic_text(path: Path, text: str) -> None:
    """Replace a small text file in one rename: a kill leaves the old text or the new."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)


def resolve_resume_config(saved: dict, given: TrainConfig, given_keys: set[str]) -> TrainConfig:
    """The saved config, with the command line's changes to harmless keys;
    changes to anything that alters the computation are refused."""
    cfg = TrainConfig.from_dict(saved)
    changes = {k: getattr(given, k) for k in given_keys}
    bad = sorted(k for k, v in changes.items() if k not in RESUMABLE_OVERRIDES and v != saved.get(k))
    if bad:
        raise ConfigError(
            f"--resume: {bad} differ from the saved run's config; resuming must not change them "
            f"(start a new --run-dir instead). Changeable on resume: {sorted(RESUMABLE_OVERRIDES)}"
        )
    return cfg.replace({k: v for k, v in changes.items() if k in RESUMABLE_OVERRIDES})


def resume_point(cfg: TrainConfig, ctx: D.DistContext, resume: bool, given_keys: set[str]) -> tuple[dict[str, Any] | None, TrainConfig]:
    """The state a run continues from (None: it starts at step 0) and its config.
    A run folder that holds a state is never overwritten without resume=True."""
    run_dir = Path(cfg.run_dir)
    if not has_state(run_dir):
        if resume:
            log.info("--resume: no state in %s yet, starting from step 0", run_dir)
        return None, cfg
    if not resume:
        raise TrainError(f"{run_dir} already holds a training state: pass --resume to continue it, or pick a new --run-dir")
    # The main process sets aside the files that fail; the others read after it.
    found = load_newest_state(run_dir, quarantine=True) if ctx.is_main else None
    D.barrier(ctx)
    if not ctx.is_main:
        found = load_newest_state(run_dir)
    state = found[0]
    return state, resolve_resume_config(state["config"], cfg, given_keys)


def prepare_run_dir(run_dir: Path, cfg: TrainConfig, run_id: str | None) -> str:
    """Create the run folder, clear a killed process's leftovers, and record the
    run's id (kept across resumes, so another run's state is recognised) and
    its config; returns the run id."""
    run_dir.mkdir(parents=True, exist_ok=True)
    clean_leftovers(run_dir)
    run_id = run_id or read_run_id(run_dir) or uuid.uuid4().hex
    if read_run_id(run_dir) != run_id:
        atomic_text(run_dir / RUN_ID_NAME, run_id + "\n")
    atomic_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=1))
    return run_id
