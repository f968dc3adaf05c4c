"""The training loop: data -> two augmented views -> encoder + projector ->
Barlow Twins loss -> LARS, with logging, checkpoints, exact resume and export.

Exact resume: every random draw is a function of (seed, step) (clip order,
crops, augmentation parameters; dropout is re-seeded per step and process),
the learning rate is a function of the step, and the state file holds the
model, optimiser, Mixup memory bank and counters. So N steps straight and
N/2 + resume + N/2 give bitwise identical weights (on a deterministic device).

DDP: the global batch is split into contiguous per-process slices; every
process draws the augmentation parameters of the whole global batch and uses
its slice; the Mixup bank is fed the global batch's last `mixup_bank` rows
(the only ones it keeps; only they cross the network) so it is the same on
every process; BatchNorms and the loss see the global batch. Hence 1
process and N processes compute the same thing up to float summation order.

The run folder's state files live in state.py, log.csv and the plots in
runlog.py, the encoder's import and export in encoder_io.py.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import content_digest, fsync_dir
from ..encoders import build_encoder
from ..errors import ConfigError, DataError, TrainError
from . import distributed as D
from .augment import ABTAugment, MixupBank, RandomLinearFader, RandomResizeCrop, slice_params
from .barlow import BarlowTwinsLoss, BarlowTwinsModel
from .cache_build import open_training_cache
from .config import TrainConfig
from .data import MelCache, derive_seed, generator_for
from .encoder_io import export_encoder, load_init
from .loader import CropLoader
from .optim import build_optimizer, encoder_factor, lr_factor, set_lr
from .runlog import LOG_FIELDS, RunLog, complete_row
from .state import (
    RESUMABLE_OVERRIDES,
    RUN_ID_NAME,
    STATE_FORMAT,
    STATE_NAMES,
    STATE_VERSION,
    StateError,
    atomic_text,
    clean_leftovers,
    has_state,
    load_newest_state,
    load_state,
    prepare_run_dir,
    read_run_id,
    resolve_resume_config,
    resume_point,
    state_path,
    state_paths,
    write_state,
)

# The names this module has always offered, for callers that import them from here.
__all__ = [
    "LOG_FIELDS", "RESUMABLE_OVERRIDES", "RUN_ID_NAME", "STATE_FORMAT", "STATE_NAMES", "STATE_VERSION",
    "NonFiniteLossError", "StateError", "content_digest", "export_encoder", "fsync_dir", "has_state", "load_init",
    "load_newest_state", "load_state", "open_cache", "read_run_id", "resolve_resume_config", "state_path",
    "state_paths", "total_steps", "train", "write_state",
]
_Logger, _complete_row, _clean_leftovers, _atomic_text = RunLog, complete_row, clean_leftovers, atomic_text

log = logging.getLogger(__name__)


class NonFiniteLossError(TrainError):
    """Too many non-finite losses in a row: the run stops (its last good state is kept)."""


def total_steps(cfg: TrainConfig, n_clips: int) -> int:
    return cfg.steps if cfg.steps > 0 else max(1, int(cfg.epochs * (n_clips // cfg.batch_size)))


def _amp_context(cfg: TrainConfig, device: torch.device):
    use = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else nullcontext()


def open_cache(cfg: TrainConfig, ctx: D.DistContext) -> MelCache:
    """The run's log-mel cache (cache_build.open_training_cache): built when
    missing by a single process; under torchrun a missing copy on any node
    stops every process at once, naming the node and the --prepare command."""
    return open_training_cache(cfg, ctx)


def _norm_stats(cache: MelCache, state: dict | None, init: dict | None) -> tuple[float, float]:
    """The input normalisation the weights were trained with: a resumed run's
    own, an --init-from run's from its checkpoint, else the cache's."""
    if state is not None:
        return tuple(float(v) for v in state["norm_stats"])
    if init is not None:
        return tuple(float(v) for v in init["norm_stats"])
    return cache.norm_stats


def _build_model(cfg: TrainConfig, ctx: D.DistContext, init: dict | None) -> tuple[BarlowTwinsModel, torch.optim.Optimizer, ABTAugment]:
    """The model (seeded, on the device), its optimiser and the augmentation."""
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    model = BarlowTwinsModel(build_encoder(cfg.encoder, **cfg.encoder_kwargs), cfg.projector)
    if init is not None:
        model.encoder.load_state_dict(init["state_dict"], strict=True)
    if ctx.distributed:
        model = D.convert_batchnorm(model, ctx.device)
    model = model.to(ctx.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    aug = ABTAugment(
        MixupBank(cfg.mixup_ratio, cfg.mixup_bank),
        RandomResizeCrop(cfg.rrc_virtual_crop, cfg.rrc_freq_scale, cfg.rrc_time_scale),
        RandomLinearFader(cfg.fader_gain),
    )
    return model, build_optimizer(model, cfg), aug


class _Timer:
    """Training throughput in samples/s, over steps 3.. (the first two warm up)
    unless the run is that short; the probe's time is not training time."""

    def __init__(self, batch_size: int, n_steps: int):
        self.batch_size, self.n_steps = batch_size, n_steps
        self.steps, self.seconds, self.sps = 0, 0.0, float("nan")
        self.start = self.last = time.perf_counter()

    def restart(self) -> None:
        self.last = time.perf_counter()

    def step_done(self, step: int) -> float:
        now = time.perf_counter()
        if step > 2 or self.n_steps <= 2:
            self.steps, self.seconds = self.steps + 1, self.seconds + (now - self.last)
        self.last = now
        self.sps = self.batch_size * self.steps / self.seconds if self.seconds > 0 else float("nan")
        return now


class _Run:
    """One call of train(): what its steps share, and the counters they move."""

    def __init__(self, cfg: TrainConfig, ctx: D.DistContext, cache: MelCache, state: dict | None, init: dict | None):
        self.cfg, self.ctx, self.cache, self.run_dir = cfg, ctx, cache, Path(cfg.run_dir)
        self.mean, self.std = _norm_stats(cache, state, init)
        self.n_steps = total_steps(cfg, len(cache))
        self.per_epoch = len(cache) // cfg.batch_size
        if self.per_epoch == 0:
            raise DataError(f"only {len(cache)} usable clips for batch_size {cfg.batch_size}; add audio or lower batch_size")
        self.warmup = int(round(cfg.warmup_epochs * self.per_epoch))
        if cfg.batch_size % ctx.world_size:
            raise ConfigError(f"batch_size {cfg.batch_size} must divide evenly over {ctx.world_size} processes")
        self.local_b = cfg.batch_size // ctx.world_size
        self.lo, self.hi = ctx.rank * self.local_b, (ctx.rank + 1) * self.local_b
        self.model, self.opt, self.aug = _build_model(cfg, ctx, init)
        self.step, self.bad_total, self.bad_run = 0, 0, 0
        if state is not None:
            self.model.load_state_dict(state["model"], strict=True)
            self.opt.load_state_dict(state["optimizer"])
            self.aug.mixup.load_state(state["mixup"], ctx.device)
            self.step, self.bad_total, self.bad_run = state["step"], state["bad_steps_total"], state["bad_steps_run"]
        self.net: nn.Module = self.model
        if ctx.distributed:
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        if cfg.compile:
            self.net = torch.compile(self.net)
        self.loss_fn = BarlowTwinsLoss(cfg.lambd, distributed=ctx.distributed)
        self.model.train()
        # What a forward pass changes in place (BatchNorm running statistics): put
        # back when a step is skipped, so a non-finite step leaves no trace.
        self.buffers = [b for b in self.model.buffers() if b is not None]
        self.logger: RunLog | None = None
        self.batches: CropLoader | None = None  # made by fit(), which knows the last step
        self.probe = None
        self.run_id = state.get("run_id") if state is not None else None
        self.saved_step = self.step if state is not None else None

    def open_outputs(self) -> None:
        """On the main process: the online probe, the run folder and its log.
        The probe touches no collective and no training state."""
        if not self.ctx.is_main:
            return
        cfg = self.cfg
        if cfg.probe_tasks:
            from .probe import OnlineProbe

            self.probe = OnlineProbe(cfg.probe_tasks, self.model.encoder, cfg.encoder, cfg.encoder_kwargs, cfg.mel_config,
                                     (self.mean, self.std))
        self.run_id = prepare_run_dir(self.run_dir, cfg, self.run_id)
        self.logger = RunLog(self.run_dir, self.step, self.probe.columns + ["probe_s"] if self.probe else None)
        log.info("run %s: %d clips, %d steps (%d per epoch, warm-up %d), %d process(es) x %d, device %s",
                 self.run_dir, len(self.cache), self.n_steps, self.per_epoch, self.warmup, self.ctx.world_size,
                 self.local_b, self.ctx.device)

    def save_state(self) -> None:
        if not self.ctx.is_main or self.step == self.saved_step:  # already on disk (e.g. resumed to export)
            return
        try:
            write_state(
                {
                    "format": STATE_FORMAT, "version": STATE_VERSION, "step": self.step, "config": self.cfg.to_dict(),
                    "model": {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
                    "optimizer": self.opt.state_dict(), "mixup": self.aug.mixup.state(),
                    "bad_steps_total": self.bad_total, "bad_steps_run": self.bad_run,
                    "norm_stats": [self.mean, self.std], "n_clips": len(self.cache), "cache": str(self.cache.folder),
                    "run_id": self.run_id,
                },
                self.run_dir,
            )
        except OSError as e:
            kept = [str(p) for p in state_paths(self.run_dir) if p.exists()]
            raise TrainError(f"could not write the training state of step {self.step} in {self.run_dir}: {e}. "
                             f"The earlier states are intact ({', '.join(kept) or 'none saved yet'}); "
                             "free some space and continue with --resume.") from None
        self.saved_step = self.step

    def _views(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This process's slice of the step's batch (normalised) and its two augmented views."""
        cfg, step, lo, hi = self.cfg, self.step, self.lo, self.hi
        x = (self.batches.get(step) - self.mean) / self.std  # read ahead by the loader (fit)
        g = generator_for(cfg.seed, "augment", step)
        p1, p2 = self.aug.sample_params(cfg.batch_size, g), self.aug.sample_params(cfg.batch_size, g)
        with torch.no_grad():
            v1, v2 = self.aug.apply(x, slice_params(p1, lo, hi)), self.aug.apply(x, slice_params(p2, lo, hi))
        if cfg.channels_last:
            v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
        return x, v1, v2

    def train_step(self) -> tuple[float, dict, float]:
        """One optimisation step; a non-finite loss skips it. Returns the loss,
        its terms and the learning-rate factor."""
        cfg, step = self.cfg, self.step
        x, v1, v2 = self._views()
        with torch.no_grad():
            saved = [b.clone() for b in self.buffers]
        factor = lr_factor(step, self.n_steps, self.warmup, cfg.final_lr_factor)
        if cfg.freeze_encoder_steps:
            set_lr(self.opt, factor, encoder_factor(step, factor, cfg.freeze_encoder_steps, self.warmup))
        else:
            set_lr(self.opt, factor)
        torch.manual_seed(derive_seed(cfg.seed, "dropout", step, self.ctx.rank))
        with _amp_context(cfg, self.ctx.device):
            z1, z2 = self.net(v1, v2)
        loss, terms = self.loss_fn(z1, z2)
        self.opt.zero_grad(set_to_none=True)
        lv = float(loss.detach())  # one sync per step: the NaN guard needs the value
        if math.isfinite(lv):
            loss.backward()
            self.opt.step()
            with torch.no_grad():  # the bank takes good batches only (for the next steps)
                self.aug.mixup.push(D.gather_tail(x, self.aug.mixup.capacity, self.ctx))
            self.bad_run = 0
        else:
            self._skip(lv, saved)
        return lv, terms, factor

    def _skip(self, lv: float, saved: list[torch.Tensor]) -> None:
        """The loss is global, so every process skips: weights, optimiser and
        bank untouched, buffers put back; too many in a row stop the run."""
        with torch.no_grad():
            for b, v in zip(self.buffers, saved):
                b.copy_(v)
        self.bad_total, self.bad_run = self.bad_total + 1, self.bad_run + 1
        if self.ctx.is_main:
            log.warning("step %d: non-finite loss %s, step skipped (%d in a row)", self.step, lv, self.bad_run)
        if self.bad_run >= self.cfg.max_bad_steps:
            run_dir = self.run_dir
            kept = (f"the last good state is {state_path(run_dir)}" if state_path(run_dir).exists()
                    else "no state had been saved yet")
            raise NonFiniteLossError(
                f"{self.bad_run} non-finite losses in a row (last at step {self.step}); stopping ({kept}). "
                f"Lower lr_weights / lr_biases, check the data (a corrupt cache: delete "
                f"{self.cache.folder}), or try --set amp=off."
            )

    def report(self, lv: float, terms: dict, factor: float, probed: dict, wall_s: float, sps: float, bar) -> None:
        """The step's log row and plots, when they are due (main process)."""
        cfg, step, n = self.cfg, self.step, self.n_steps
        if not self.ctx.is_main:
            return
        if step % cfg.log_every == 0 or step == n or probed:
            bar.set_postfix(loss=f"{lv:.1f}", sps=f"{sps:.0f}")
            self.logger.row({"step": step, "loss": lv, "invariance": float(terms["invariance"]),
                             "redundancy": float(terms["redundancy"]), "lr_factor": factor, "samples_per_s": sps,
                             "bad_steps": self.bad_total, "wall_s": round(wall_s, 3), **probed})
        if cfg.plot_every > 0 and (step % cfg.plot_every == 0 or step == n):
            self.logger.plots(terms["c"], step)

    def probe_due(self) -> bool:
        every = self.cfg.probe_every
        return self.probe is not None and ((every > 0 and self.step % every == 0) or self.step == self.n_steps)

    def fit(self, stop_at: int | None) -> dict[str, Any]:
        """Steps until n_steps (or stop_at), saving every ckpt_every; at the end
        the state is saved and, when the run is complete, the encoder exported."""
        from tqdm import tqdm

        # Only other ranks are silenced explicitly: an explicit disable=False would
        # override the user's TQDM_DISABLE=1 (tqdm reads TQDM_* only for unset arguments).
        quiet = {} if self.ctx.is_main else {"disable": True}
        bar = tqdm(total=self.n_steps, initial=self.step, desc="train", unit="step", mininterval=1, **quiet)
        losses: list[float] = []
        timer, exported = _Timer(self.cfg.batch_size, self.n_steps), None
        last = self.n_steps if stop_at is None else min(self.n_steps, stop_at)
        cfg = self.cfg
        self.batches = CropLoader(self.cache, cfg.batch_size, cfg.crop_frames, cfg.seed, self.lo, self.hi,
                                  self.step, last, self.ctx.device)
        try:
            if self.probe is not None and self.step == 0 and not self.logger.probe_history:  # the curve's start
                self.logger.row({"step": 0, **self.probe()})
                timer.restart()
            while self.step < last:
                lv, terms, factor = self.train_step()
                self.step += 1
                losses.append(lv)
                now = timer.step_done(self.step)
                bar.update(1)
                probed: dict[str, float] = {}
                if self.probe_due():
                    probed = self.probe()
                    timer.restart()  # the probe's time is not training time
                self.report(lv, terms, factor, probed, now - timer.start, timer.sps, bar)
                if self.cfg.ckpt_every > 0 and self.step % self.cfg.ckpt_every == 0 and self.step < self.n_steps:
                    self.save_state()
            self.save_state()
            if self.ctx.is_main and self.step == self.n_steps:
                exported = export_encoder(load_state(state_path(self.run_dir), self.run_id), self.run_dir / "encoder.pt")
                log.info("exported the encoder to %s", exported)
        finally:
            self.batches.close()
            bar.close()
            if self.logger is not None:
                self.logger.close()
        D.barrier(self.ctx)
        return {"step": self.step, "losses": losses, "samples_per_s": timer.sps, "exported": exported,
                "run_dir": self.run_dir, "bad_steps": self.bad_total, "cache": self.cache.folder}


def train(cfg: TrainConfig, resume: bool = False, given_keys: set[str] | None = None, stop_at: int | None = None) -> dict[str, Any]:
    """Train (or resume) the run in cfg.run_dir; returns a summary with the
    final step, the losses of this call, throughput and the exported checkpoint.

    stop_at: save the state and return after this step, as a job with a time
    limit would (no export); a later call with resume=True continues exactly."""
    ctx = D.setup(cfg.device)
    state, cfg = resume_point(cfg, ctx, resume, given_keys or set())
    init = load_init(cfg) if state is None and cfg.init_from else None  # before a long cache build
    cache = open_cache(cfg, ctx)
    if state is not None and state.get("cache") != str(cache.folder) and ctx.is_main:
        log.warning("resuming on a different log-mel cache (%s, was %s): the file list or mel settings changed, "
                    "so the data order will not replay the interrupted run", cache.folder, state.get("cache"))
    run = _Run(cfg, ctx, cache, state, init)
    run.open_outputs()
    return run.fit(stop_at)
