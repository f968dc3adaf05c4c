"""The training loop: data -> two augmented views -> encoder + projector ->
Barlow Twins loss -> LARS, with logging, checkpoints, exact resume and export.

Exact resume: every random draw is a function of (seed, step) (clip order,
crops, augmentation parameters; dropout is re-seeded per step and process),
the learning rate is a function of the step, and the state file holds the
model, optimiser, Mixup memory bank and counters. So N steps straight and
N/2 + resume + N/2 give bitwise identical weights (on a deterministic device).

DDP: the global batch is split into contiguous per-process slices; every
process draws the augmentation parameters of the whole global batch and uses
its slice; the Mixup bank is fed the all-gathered global batch so it is the
same on every process; BatchNorms and the loss see the global batch. Hence 1
process and N processes compute the same thing up to float summation order.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import sys
import time
import uuid
import zipfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import (
    atomic_torch_save,
    content_digest,
    fsync_dir,
    make_checkpoint,
    save_checkpoint,
    torch_load_untrusted,
)
from ..encoders import build_encoder
from . import distributed as D
from .augment import ABTAugment, MixupBank, RandomLinearFader, RandomResizeCrop, slice_params
from .barlow import BarlowTwinsLoss, BarlowTwinsModel
from .config import TrainConfig
from .data import (
    CacheError,
    MelCache,
    default_cache_root,
    derive_seed,
    generator_for,
    list_audio,
    open_or_build_cache,
)
from .loader import CropLoader
from .optim import build_optimizer, encoder_factor, lr_factor, set_lr

log = logging.getLogger(__name__)

STATE_FORMAT = "hear-abt-train-state"
STATE_VERSION = 1
LOG_FIELDS = ["step", "loss", "invariance", "redundancy", "lr_factor", "samples_per_s", "bad_steps", "wall_s"]
# Keys that may differ when resuming (they do not change what is computed).
RESUMABLE_OVERRIDES = {"steps", "epochs", "device", "log_every", "plot_every", "ckpt_every", "max_bad_steps", "workers", "run_dir", "data", "cache_dir",
                       "probe_tasks", "probe_every"}


class NonFiniteLossError(RuntimeError):
    pass


class StateError(ValueError):
    """A training-state file that cannot be trusted (truncated, corrupt, another run's)."""


STATE_NAMES = ("state.pt", "state.prev.pt")  # the newest state, and the one before it
RUN_ID_NAME = "run_id"


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
    stops with their errors: never a silent restart from step 0."""
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
        raise SystemExit("no usable training state in {}:\n  {}\nMove these files away to start the run again from "
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


def _clean_leftovers(run_dir: Path) -> None:
    """Remove temporary files an earlier killed process left behind."""
    for pattern in ("..state.pt.new.*.tmp", ".state.pt.new", ".state.prev.pt.link", ".encoder.pt.*.tmp", ".log.csv.tmp", ".config.json.tmp"):
        for p in run_dir.glob(pattern):
            p.unlink(missing_ok=True)


def resolve_resume_config(saved: dict, given: TrainConfig, given_keys: set[str]) -> TrainConfig:
    """The saved config, with the command line's changes to harmless keys;
    changes to anything that alters the computation are refused."""
    cfg = TrainConfig.from_dict(saved)
    changes = {k: getattr(given, k) for k in given_keys}
    bad = sorted(k for k, v in changes.items() if k not in RESUMABLE_OVERRIDES and v != saved.get(k))
    if bad:
        raise SystemExit(
            f"--resume: {bad} differ from the saved run's config; resuming must not change them "
            f"(start a new --run-dir instead). Changeable on resume: {sorted(RESUMABLE_OVERRIDES)}"
        )
    return cfg.replace({k: v for k, v in changes.items() if k in RESUMABLE_OVERRIDES})


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)


def total_steps(cfg: TrainConfig, n_clips: int) -> int:
    return cfg.steps if cfg.steps > 0 else max(1, int(cfg.epochs * (n_clips // cfg.batch_size)))


def load_init(cfg: TrainConfig) -> dict[str, Any]:
    """The checkpoint named by cfg.init_from, checked against the run's encoder
    and mel settings; a clear SystemExit when it cannot start this run."""
    from ..checkpoint import CheckpointError, load_checkpoint

    try:
        ckpt = load_checkpoint(cfg.init_from)
    except (FileNotFoundError, CheckpointError) as e:
        raise SystemExit(f"init_from: {e}") from None
    enc = ckpt["encoder"]
    if (enc["name"], dict(enc["kwargs"])) != (cfg.encoder, dict(cfg.encoder_kwargs)):
        raise SystemExit(f"init_from {cfg.init_from} holds encoder {enc['name']} {dict(enc['kwargs'])}, the run asks for "
                         f"{cfg.encoder} {dict(cfg.encoder_kwargs)}: set --encoder / encoder_kwargs to match")
    if dict(ckpt["mel"]) != dict(cfg.mel):
        raise SystemExit(f"init_from {cfg.init_from} was trained on log-mels {dict(ckpt['mel'])}, the run's are {dict(cfg.mel)}")
    return ckpt


def export_encoder(state: dict, path: str | Path, half: bool = False) -> Path:
    """Write the encoder of a training state as a HEAR checkpoint (DESIGN §8).
    half=True stores the weights as fp16: half the file, for shipping; they
    load back as fp32."""
    cfg = TrainConfig.from_dict(state["config"])
    enc = {k[len("encoder."):]: v.contiguous() for k, v in state["model"].items() if k.startswith("encoder.")}
    ckpt = make_checkpoint(
        encoder_name=cfg.encoder,
        encoder_kwargs=cfg.encoder_kwargs,
        mel=cfg.mel,
        norm_stats=tuple(state["norm_stats"]),
        state_dict=enc,
        train_config=cfg.to_dict(),
        step=state["step"],
        provenance={"kind": "abt-pretrained", "data": cfg.data, "n_clips": state.get("n_clips"),
                    "norm_stats_source": f"copied from the init_from checkpoint {cfg.init_from}" if cfg.init_from else "the training log-mel cache"},
        half=half,
    )
    save_checkpoint(ckpt, path)
    return Path(path)


def _amp_context(cfg: TrainConfig, device: torch.device):
    use = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else nullcontext()


def _complete_row(r: dict) -> bool:
    """False for a row cut short by a kill: a training row ends with wall_s, a
    probe-only row (step 0) with the probe's columns."""
    if None in r or None in r.values() or not (r.get("step") or "").isdigit():
        return False
    return r.get("wall_s") not in (None, "") or r.get("probe_mean") not in (None, "")


class _Logger:
    """CSV (+ TensorBoard when installed) on the main process; PNG plots.

    extra_fields: the probe's columns (probe_<task>..., probe_mean, probe_s);
    rows without a probe value leave them empty, as rows of a probe-only
    step (step 0) leave the loss columns empty."""

    def __init__(self, run_dir: Path, start_step: int, extra_fields: list[str] | None = None):
        self.run_dir, self.path = run_dir, run_dir / "log.csv"
        self.fields = LOG_FIELDS + list(extra_fields or [])
        rows = []
        if self.path.exists():  # drop rows logged after the state we resume from, and any cut short by a kill
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if _complete_row(r) and int(r["step"]) <= start_step]
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, self.fields, extrasaction="ignore")  # columns of an earlier probe are dropped
        w.writeheader()
        w.writerows(rows)
        _atomic_text(self.path, text.getvalue())
        self.history = [(int(r["step"]), float(r["loss"])) for r in rows if r.get("loss")]
        self.probe_cols = [c for c in self.fields if c.startswith("probe_") and c != "probe_s"]
        self.probe_history = [(int(r["step"]), {c: float(r[c]) for c in self.probe_cols})
                              for r in rows if all(r.get(c) for c in self.probe_cols) and self.probe_cols]
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1)
        except ImportError:
            self.tb = None

    def row(self, values: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow({k: values.get(k, "") for k in self.fields})
        if "loss" in values and math.isfinite(values["loss"]):
            self.history.append((values["step"], values["loss"]))
        if self.probe_cols and "probe_mean" in values:
            self.probe_history.append((values["step"], {c: values[c] for c in self.probe_cols}))
        if self.tb is not None:
            for k in ("loss", "invariance", "redundancy", "lr_factor", "samples_per_s", *self.probe_cols):
                if k in values:
                    self.tb.add_scalar(f"{'probe' if k.startswith('probe_') else 'train'}/{k}", values[k], values["step"])

    def plots(self, c: torch.Tensor | None, step: int) -> None:
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            log.warning("matplotlib is not installed: no plots (pip install matplotlib)")
            return
        out = self.run_dir / "plots"
        out.mkdir(exist_ok=True)
        if self.history or self.probe_history:  # the loss, and beside it the probe's accuracy
            fig = Figure(figsize=(11 if self.probe_history else 6, 4))
            ax = fig.add_subplot(1, 2 if self.probe_history else 1, 1)
            if self.history:
                s, l = zip(*self.history)
                ax.plot(s, l)
            ax.set(xlabel="step", ylabel="Barlow Twins loss", title=f"loss to step {step}")
            ax.grid(alpha=0.3)
            if self.probe_history:
                ax = fig.add_subplot(1, 2, 2)
                s = [h[0] for h in self.probe_history]
                for col in self.probe_cols:
                    ax.plot(s, [h[1][col] for h in self.probe_history], marker=".",
                            lw=2.5 if col == "probe_mean" else 1, label=col[len("probe_"):])
                ax.set(xlabel="step", ylabel="probe accuracy (test)", title="online linear probe")
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8)
            fig.tight_layout()
            FigureCanvasAgg(fig).print_png(str(out / "loss.png"))
        if c is not None:
            fig = Figure(figsize=(5, 4.5))
            ax = fig.add_subplot()
            k = min(128, c.shape[0])
            im = ax.imshow(c[:k, :k].float().cpu().numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
            fig.colorbar(im)
            ax.set_title(f"cross-correlation C[:{k}, :{k}], step {step}", fontsize=10)
            FigureCanvasAgg(fig).print_png(str(out / "xcorr.png"))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def open_cache(cfg: TrainConfig, ctx: D.DistContext) -> MelCache:
    """List the files and open their cache; the main process builds it when
    missing while the others wait. `data` may also be a built cache folder
    (one holding index.json), e.g. copied to a machine without the audio."""
    if (Path(cfg.data) / "index.json").is_file():
        try:
            cache = MelCache.open(cfg.data)
        except CacheError as e:
            raise SystemExit(f"--data {cfg.data}: {e}") from None
        if cache.mel != cfg.mel_config:
            raise SystemExit(f"{cfg.data} was built with {cache.mel}, the config asks for {cfg.mel_config}")
        return cache
    files = list_audio(cfg.data)
    root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_root()
    if ctx.is_main:
        cache = open_or_build_cache(files, cfg.mel_config, root, cfg.workers)
    D.barrier(ctx)
    if not ctx.is_main:
        cache = open_or_build_cache(files, cfg.mel_config, root, build=False)
    return cache


def train(cfg: TrainConfig, resume: bool = False, given_keys: set[str] | None = None, stop_at: int | None = None) -> dict[str, Any]:
    """Train (or resume) the run in cfg.run_dir; returns a summary with the
    final step, the losses of this call, throughput and the exported checkpoint.

    stop_at: save the state and return after this step, as a job with a time
    limit would (no export); a later call with resume=True continues exactly."""
    ctx = D.setup(cfg.device)
    run_dir = Path(cfg.run_dir)
    state = None
    if has_state(run_dir):
        if not resume:
            raise SystemExit(f"{run_dir} already holds a training state: pass --resume to continue it, or pick a new --run-dir")
        # The main process sets aside the files that fail; the others read after it.
        found = load_newest_state(run_dir, quarantine=True) if ctx.is_main else None
        D.barrier(ctx)
        if not ctx.is_main:
            found = load_newest_state(run_dir)
        state = found[0]
        cfg = resolve_resume_config(state["config"], cfg, given_keys or set())
    elif resume:
        log.info("--resume: no state in %s yet, starting from step 0", run_dir)
    init = load_init(cfg) if state is None and cfg.init_from else None  # before a long cache build
    cache = open_cache(cfg, ctx)
    if state is not None and state.get("cache") != str(cache.folder) and ctx.is_main:
        log.warning("resuming on a different log-mel cache (%s, was %s): the file list or mel settings changed, "
                    "so the data order will not replay the interrupted run", cache.folder, state.get("cache"))
    if state is not None:  # the stats the weights were trained with (an --init-from run's are not the cache's)
        mean, std = (float(v) for v in state["norm_stats"])
    elif init is not None:
        mean, std = (float(v) for v in init["norm_stats"])
    else:
        mean, std = cache.norm_stats
    n_steps = total_steps(cfg, len(cache))
    per_epoch = len(cache) // cfg.batch_size
    if per_epoch == 0:
        raise SystemExit(f"only {len(cache)} usable clips for batch_size {cfg.batch_size}; add audio or lower batch_size")
    warmup = int(round(cfg.warmup_epochs * per_epoch))
    if cfg.batch_size % ctx.world_size:
        raise SystemExit(f"batch_size {cfg.batch_size} must divide evenly over {ctx.world_size} processes")
    local_b = cfg.batch_size // ctx.world_size
    lo, hi = ctx.rank * local_b, (ctx.rank + 1) * local_b
    device = ctx.device

    torch.manual_seed(derive_seed(cfg.seed, "init"))
    model = BarlowTwinsModel(build_encoder(cfg.encoder, **cfg.encoder_kwargs), cfg.projector)
    if init is not None:
        model.encoder.load_state_dict(init["state_dict"], strict=True)
    if ctx.distributed:
        model = D.convert_batchnorm(model, device)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, cfg)
    aug = ABTAugment(
        MixupBank(cfg.mixup_ratio, cfg.mixup_bank),
        RandomResizeCrop(cfg.rrc_virtual_crop, cfg.rrc_freq_scale, cfg.rrc_time_scale),
        RandomLinearFader(cfg.fader_gain),
    )
    step, bad_total, bad_run = 0, 0, 0
    if state is not None:
        model.load_state_dict(state["model"], strict=True)
        opt.load_state_dict(state["optimizer"])
        aug.mixup.load_state(state["mixup"], device)
        step, bad_total, bad_run = state["step"], state["bad_steps_total"], state["bad_steps_run"]
    net: nn.Module = model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    loss_fn = BarlowTwinsLoss(cfg.lambd, distributed=ctx.distributed)
    model.train()

    logger, probe = None, None
    run_id = state.get("run_id") if state is not None else None
    if ctx.is_main:
        if cfg.probe_tasks:  # main process only: it touches no collective and no training state
            from .probe import OnlineProbe

            probe = OnlineProbe(cfg.probe_tasks, model.encoder, cfg.encoder, cfg.encoder_kwargs, cfg.mel_config, (mean, std))
        run_dir.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(run_dir)
        run_id = run_id or read_run_id(run_dir) or uuid.uuid4().hex
        if read_run_id(run_dir) != run_id:
            _atomic_text(run_dir / RUN_ID_NAME, run_id + "\n")
        _atomic_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=1))
        logger = _Logger(run_dir, step, probe.columns + ["probe_s"] if probe else None)
        log.info("run %s: %d clips, %d steps (%d per epoch, warm-up %d), %d process(es) x %d, device %s",
                 run_dir, len(cache), n_steps, per_epoch, warmup, ctx.world_size, local_b, device)

    saved_step = step if state is not None else None

    def save_state() -> None:
        nonlocal saved_step
        if not ctx.is_main or step == saved_step:  # already on disk (e.g. resumed to export)
            return
        try:
            write_state(
                {
                    "format": STATE_FORMAT, "version": STATE_VERSION, "step": step, "config": cfg.to_dict(),
                    "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                    "optimizer": opt.state_dict(), "mixup": aug.mixup.state(),
                    "bad_steps_total": bad_total, "bad_steps_run": bad_run,
                    "norm_stats": [mean, std], "n_clips": len(cache), "cache": str(cache.folder), "run_id": run_id,
                },
                run_dir,
            )
        except OSError as e:
            kept = [str(p) for p in state_paths(run_dir) if p.exists()]
            raise SystemExit(f"could not write the training state of step {step} in {run_dir}: {e}. "
                             f"The earlier states are intact ({', '.join(kept) or 'none saved yet'}); "
                             "free some space and continue with --resume.") from None
        saved_step = step

    from tqdm import tqdm

    # Only other ranks are silenced explicitly: an explicit disable=False would
    # override the user's TQDM_DISABLE=1 (tqdm reads TQDM_* only for unset arguments).
    quiet = {} if ctx.is_main else {"disable": True}
    bar = tqdm(total=n_steps, initial=step, desc="train", unit="step", mininterval=1, **quiet)
    losses: list[float] = []
    timed_steps, timed_s, t_last = 0, 0.0, time.perf_counter()
    t_start, sps, c_last, exported = t_last, float("nan"), None, None
    # What a forward pass changes in place (BatchNorm running statistics): put
    # back when a step is skipped, so a non-finite step leaves no trace.
    buffers = [b for b in model.buffers() if b is not None]
    last = n_steps if stop_at is None else min(n_steps, stop_at)
    batches = CropLoader(cache, cfg.batch_size, cfg.crop_frames, cfg.seed, lo, hi, step, last, device)  # reads ahead
    try:
        if probe is not None and step == 0 and not logger.probe_history:  # the probe curve's starting point
            logger.row({"step": 0, **probe()})
            t_last = time.perf_counter()
        while step < last:
            x = (batches.get(step) - mean) / std
            g = generator_for(cfg.seed, "augment", step)
            p1, p2 = aug.sample_params(cfg.batch_size, g), aug.sample_params(cfg.batch_size, g)
            with torch.no_grad():
                v1, v2 = aug.apply(x, slice_params(p1, lo, hi)), aug.apply(x, slice_params(p2, lo, hi))
                saved = [b.clone() for b in buffers]
            if cfg.channels_last:
                v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
            factor = lr_factor(step, n_steps, warmup, cfg.final_lr_factor)
            if cfg.freeze_encoder_steps:
                set_lr(opt, factor, encoder_factor(step, factor, cfg.freeze_encoder_steps, warmup))
            else:
                set_lr(opt, factor)
            torch.manual_seed(derive_seed(cfg.seed, "dropout", step, ctx.rank))
            with _amp_context(cfg, device):
                z1, z2 = net(v1, v2)
            loss, terms = loss_fn(z1, z2)
            opt.zero_grad(set_to_none=True)
            lv = float(loss.detach())  # one sync per step: the NaN guard needs the value
            if math.isfinite(lv):
                loss.backward()
                opt.step()
                with torch.no_grad():  # the bank takes good batches only (for the next steps)
                    aug.mixup.push(D.all_gather_cat(x, ctx))
                bad_run = 0
            else:  # the loss is global, so every process skips: weights, optimiser and bank untouched
                with torch.no_grad():
                    for b, v in zip(buffers, saved):
                        b.copy_(v)
                bad_total, bad_run = bad_total + 1, bad_run + 1
                if ctx.is_main:
                    log.warning("step %d: non-finite loss %s, step skipped (%d in a row)", step, lv, bad_run)
                if bad_run >= cfg.max_bad_steps:
                    kept = (f"the last good state is {state_path(run_dir)}" if state_path(run_dir).exists()
                            else "no state had been saved yet")
                    raise NonFiniteLossError(
                        f"{bad_run} non-finite losses in a row (last at step {step}); stopping ({kept}). "
                        f"Lower lr_weights / lr_biases, check the data (a corrupt cache: delete "
                        f"{cache.folder}), or try --set amp=off."
                    )
            step += 1
            losses.append(lv)
            c_last = terms["c"]
            now = time.perf_counter()
            if step > 2 or n_steps <= 2:  # skip warm-up steps in the throughput
                timed_steps, timed_s = timed_steps + 1, timed_s + (now - t_last)
            t_last = now
            sps = cfg.batch_size * timed_steps / timed_s if timed_s > 0 else float("nan")
            bar.update(1)
            probed: dict[str, float] = {}
            if probe is not None and ((cfg.probe_every > 0 and step % cfg.probe_every == 0) or step == n_steps):
                probed = probe()
                t_last = time.perf_counter()  # the probe's time is not training time
            if ctx.is_main and (step % cfg.log_every == 0 or step == n_steps or probed):
                bar.set_postfix(loss=f"{lv:.1f}", sps=f"{sps:.0f}")
                logger.row({"step": step, "loss": lv, "invariance": float(terms["invariance"]),
                            "redundancy": float(terms["redundancy"]), "lr_factor": factor, "samples_per_s": sps,
                            "bad_steps": bad_total, "wall_s": round(now - t_start, 3), **probed})
            if ctx.is_main and cfg.plot_every > 0 and (step % cfg.plot_every == 0 or step == n_steps):
                logger.plots(c_last, step)
            if cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0 and step < n_steps:
                save_state()
        save_state()
        if ctx.is_main and step == n_steps:
            exported = export_encoder(load_state(state_path(run_dir), run_id), run_dir / "encoder.pt")
            log.info("exported the encoder to %s", exported)
    finally:
        batches.close()
        bar.close()
        if logger is not None:
            logger.close()
    D.barrier(ctx)
    return {"step": step, "losses": losses, "samples_per_s": sps,
            "exported": exported, "run_dir": run_dir, "bad_steps": bad_total, "cache": cache.folder}
