"""Every GPU measurement in one command: correctness, trainer throughput, embedding speed.

A GPU comes rarely and for minutes, to a machine with torch + torchaudio
only (no soundfile, maybe no heareval or hear-validator, no network), and
only a small working tree travels to it. So the run needs nothing but this
repository and one folder that `--prepare` builds here on CPU:

    python -m tools.gpu_check --prepare                    # here: cache/gpu_check/ (< 40 MiB, git-ignored)
    python -m tools.gpu_check --device cuda --out gpu_out  # there: <= 8 min on one H100
    python -m tools.gpu_check --device cpu --quick --out DIR   # CI: the same code on CPU, small sizes

It writes DIR/gpu_check.md (one markdown table) and DIR/gpu_check.json.
Sections: (1) correctness, the checks that tests/test_gpu.py also runs under
the `gpu` pytest marker: every encoder's embeddings on the device equal CPU's,
a bf16 trainer step is finite and close to fp32's, torchrun with NCCL (gloo on
CPU) and SyncBatchNorm runs two steps, hear-validator passes; (2) two-view
samples/s and peak memory through the whole trainer (cache -> crops ->
augmentations -> step) at several batch sizes, bf16 vs fp32, channels_last
and torch.compile on/off, plus the CPU data path alone (to name the limit);
(3) real-time factors of timestamp and scene embeddings per encoder.
A missing piece (hear-validator, the prepared folder) is one line "not run"
with the reason, never a crash; a failing check is reported and the run goes on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from hear_abt.cli import EXAMPLES_DIR
from hear_abt.encoders import ENCODERS
from hear_abt.frontend import MelConfig
from hear_abt.model import ABTModel

REPO = Path(__file__).resolve().parents[1]

DEFAULT_PREP = REPO / "cache" / "gpu_check"
PREP_LIMIT_MB = 40
SR = 16000
# Device vs CPU embeddings, with TF32 off (exact-arithmetic kernels): the
# difference is summation order only.
EMB_RTOL, EMB_ATOL_REL = 1e-4, 1e-4  # atol is this times the embedding's max |value|
# With the device's defaults (cuDNN may use TF32 convolutions): cosine per embedding.
EMB_MIN_COSINE_DEFAULT = 0.999
BF16_LOSS_RTOL = 0.05  # bf16 vs fp32 first-step Barlow Twins loss


# ----------------------------------------------------------------- preparation

EXAMPLE_WAV = EXAMPLES_DIR / "speech_and_bell.wav"


def _fresh_folder_with_example(out: Path) -> None:
    """Empty `out` and save the bundled clip in it as a tensor (the GPU machine has no soundfile)."""
    from hear_abt.audio_io import read_audio

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    wav, _ = read_audio(EXAMPLE_WAV)
    torch.save({"wav": wav.contiguous(), "sample_rate": SR}, out / "example.pt")


def prepare(out: Path, n_clips: int = 1100) -> Path:
    """Build what the device run needs and the repository lacks: an fp16 log-mel
    cache of real audio (the bundled clip and the freedesktop sounds, listed
    `n_clips` times over in a manifest so batch 1024 fits one epoch) and the
    bundled clip as a tensor. Needs soundfile (this machine, not the GPU one)."""
    from hear_abt.train.cache_build import open_or_build_cache

    sources = [EXAMPLE_WAV, *sorted(Path("/usr/share/sounds/freedesktop/stereo").glob("*.oga"))]
    _fresh_folder_with_example(out)
    files = [str(sources[i % len(sources)]) for i in range(n_clips)]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "clips.csv"
        manifest.write_text("path\n" + "\n".join(files) + "\n", encoding="utf-8")
        from hear_abt.train.data import list_audio

        cache = open_or_build_cache(list_audio(manifest), MelConfig(), Path(tmp) / "root", workers=0)
        shutil.copytree(cache.folder, out / "mel_cache")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    if size > PREP_LIMIT_MB:
        raise SystemExit(f"{out} is {size:.1f} MiB, over the {PREP_LIMIT_MB} MiB limit: lower --clips")
    print(f"prepared {out}: {n_clips} clips of real audio, {size:.1f} MiB; carry it with the working tree")
    return out


def prepare_from_cache(cache: Path, out: Path) -> Path:
    """A prepared folder over a log-mel cache that already exists (e.g. one the
    trainer built on the GPU machine from a packed corpus), so the corpus is
    moved once: the cache is linked, and the bundled clip saved beside it."""
    if not (cache / "index.json").is_file():
        raise SystemExit(f"--from-cache {cache}: not a log-mel cache folder (no index.json)")
    _fresh_folder_with_example(out)
    (out / "mel_cache").symlink_to(cache.resolve(), target_is_directory=True)
    print(f"prepared {out} over {cache}")
    return out


class Prepared:
    """The folder --prepare wrote; every reader of it fails with the fix."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        if not (self.folder / "mel_cache" / "index.json").is_file() or not (self.folder / "example.pt").is_file():
            raise FileNotFoundError(f"{self.folder} is not a prepared folder: run `python -m tools.gpu_check --prepare` first")
        self.cache = str(self.folder / "mel_cache")
        d = torch.load(self.folder / "example.pt", weights_only=True)
        self.example = d["wav"].float()
        with open(self.folder / "mel_cache" / "index.json", encoding="utf-8") as f:
            self.norm_stats = tuple(json.load(f)["norm_stats"])

    def clips(self, seconds: float, n: int, device: str | torch.device = "cpu") -> torch.Tensor:
        """n different clips: the bundled real clip tiled to length, each starting elsewhere."""
        k = int(seconds * SR)
        x = self.example.repeat(k // len(self.example) + 1)[:k]
        return torch.stack([x.roll(i * 7919) for i in range(n)]).to(device)


def random_model(name: str, prep: Prepared, seed: int = 0) -> ABTModel:
    """A random-weights model with the prepared corpus's normalisation (no file I/O)."""
    torch.manual_seed(seed)
    return ABTModel(name, {}, MelConfig(), prep.norm_stats).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------- correctness


def check_encoders_match_cpu(prep: Prepared, device: str, encoders: list[str], seconds: float = 4.0) -> dict:
    """Every encoder's timestamp + scene embeddings on `device` equal the CPU's."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import hear_abt

    dev = torch.device(device)
    x = prep.clips(seconds, 2)
    worst: dict[str, Any] = {}
    failures: list[str] = []
    for name in encoders:
        model = random_model(name, prep)
        ref_ts, _ = hear_abt.get_timestamp_embeddings(x, model)
        ref_sc = hear_abt.get_scene_embeddings(x, model)
        model.to(dev)
        tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        fastpath = torch.backends.mha.get_fastpath_enabled()
        try:
            # Strict fp32: TF32 off, and the attention on its plain (math) kernel rather than the
            # fused fast path and SDPA kernels, which the 2026-11-27 H100 run suggests do not
            # follow the TF32 flags (ViT-C small/base differed by 1.2e-3 there, AudioNTT by 9e-6).
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
            torch.backends.mha.set_fastpath_enabled(False)
            with sdpa_kernel(SDPBackend.MATH):
                ts, _ = hear_abt.get_timestamp_embeddings(x.to(dev), model)
                sc = hear_abt.get_scene_embeddings(x.to(dev), model)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.mha.set_fastpath_enabled(fastpath)
        default_ts, _ = hear_abt.get_timestamp_embeddings(x.to(dev), model)  # the device's default kernels
        cos = torch.nn.functional.cosine_similarity(default_ts.cpu().flatten(0, 1), ref_ts.flatten(0, 1), dim=-1).min()
        worst[name] = {"max_abs_diff": float((ts.cpu() - ref_ts).abs().max()), "min_cosine_default": float(cos),
                       "atol": EMB_ATOL_REL * float(ref_ts.abs().max())}
        for got, ref in ((ts.cpu(), ref_ts), (sc.cpu(), ref_sc)):  # every encoder is measured before any failure is raised
            try:
                torch.testing.assert_close(got, ref, rtol=EMB_RTOL, atol=EMB_ATOL_REL * float(ref.abs().max()))
            except AssertionError as e:
                failures.append(f"{name}: {str(e).splitlines()[-2].strip()}")
                break
        if not cos >= EMB_MIN_COSINE_DEFAULT:
            failures.append(f"{name} with default kernels: min cosine {float(cos):.5f} < {EMB_MIN_COSINE_DEFAULT}")
    if failures:
        raise AssertionError("; ".join(failures) + " | max |diff| (atol): "
                             + ", ".join(f"{k} {v['max_abs_diff']:.1e} ({v['atol']:.1e})" for k, v in worst.items()))
    return worst


def _trainer_config(prep: Prepared, run_dir: Path, device: str, **kw) -> Any:
    from hear_abt.train.config import TrainConfig

    base = dict(data=prep.cache, run_dir=str(run_dir), device=device, log_every=10**9, plot_every=0, ckpt_every=0, workers=0)
    base.update(kw)
    return TrainConfig(**base)


def check_bf16_step(prep: Prepared, device: str, batch: int = 64, projector: tuple = (8192, 1048)) -> dict:
    """The trainer's first step in bf16 autocast is finite and its loss is within
    BF16_LOSS_RTOL of the same step in fp32 (same data, init and augmentations)."""
    from hear_abt.train.loop import train

    losses = {}
    with tempfile.TemporaryDirectory() as tmp:
        for amp in ("off", "bf16"):
            cfg = _trainer_config(prep, Path(tmp) / amp, device, batch_size=batch, steps=1, amp=amp, projector=list(projector))
            losses[amp] = train(cfg)["losses"][0]
    rel = abs(losses["bf16"] - losses["off"]) / abs(losses["off"])
    if not (torch.isfinite(torch.tensor(losses["bf16"])) and rel <= BF16_LOSS_RTOL):
        raise AssertionError(f"bf16 loss {losses['bf16']} vs fp32 {losses['off']}: relative difference {rel:.4f} > {BF16_LOSS_RTOL}")
    return {"loss_fp32": losses["off"], "loss_bf16": losses["bf16"], "rel_diff": rel}


def check_torchrun(prep: Prepared, device: str, batch: int = 16) -> dict:
    """torchrun --nproc_per_node 1: a process group (NCCL on CUDA, gloo on CPU),
    SyncBatchNorm (GlobalBatchNorm on CPU), DDP and the distributed loss for
    two steps (tools/ddp_probe.py); then the trainer itself for two steps."""
    if shutil.which("torchrun") is None and importlib_missing("torch.distributed.run"):
        raise RuntimeError("torchrun is not available")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "2"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", str(29500 + os.getpid() % 1000)]
    probe = subprocess.run([*launcher, "-m", "tools.ddp_probe", "--data", prep.cache, "--device", device, "--batch", str(batch)],
                           capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    if probe.returncode != 0:
        raise AssertionError(f"ddp_probe failed (rc {probe.returncode}): {probe.stderr[-1500:]}")
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = subprocess.run([*launcher, "-m", "hear_abt.train", "--data", prep.cache, "--run-dir", str(Path(tmp) / "run"),
                                  "--device", device, "--steps", "2", "--batch-size", str(batch), "--set", "plot_every=0", "--set", "workers=0"],
                                 capture_output=True, text=True, env=env, timeout=300)
        if trainer.returncode != 0:
            raise AssertionError(f"torchrun -m hear_abt.train failed (rc {trainer.returncode}): {trainer.stderr[-1500:]}")
        if not (Path(tmp) / "run" / "encoder.pt").is_file():
            raise AssertionError("torchrun -m hear_abt.train ran but exported no encoder.pt")
    return result


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


class NotRun(Exception):
    """A check that cannot run on this machine (reported, not failed)."""


def check_validator(device: str) -> dict:
    """hear-validator hear_abt --device DEVICE (the bundled default checkpoint)."""
    exe = shutil.which("hear-validator")
    if exe is None:
        raise NotRun("hear-validator is not installed on this machine")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([exe, "hear_abt", "--device", device], capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        raise AssertionError(f"hear-validator failed (rc {r.returncode}): {(r.stdout + r.stderr)[-1500:]}")
    return {"tail": (r.stdout + r.stderr).strip().splitlines()[-1][-200:]}


# ----------------------------------------------------------------- throughput


def train_throughput(prep: Prepared, device: str, batch: int, amp: str, channels_last: bool, compile_: bool, steps: int,
                     projector: tuple = (8192, 1048)) -> dict:
    """Two-view samples/s through the whole trainer (2 warm-up steps excluded)
    and peak device memory."""
    from hear_abt.train.loop import train

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _trainer_config(prep, Path(tmp) / "run", device, batch_size=batch, steps=steps + 2, amp=amp,
                              channels_last=channels_last, compile=compile_, projector=list(projector))
        s = train(cfg)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan")
    return {"samples_per_s": s["samples_per_s"], "peak_mem_mb": peak}


def data_path_rate(prep: Prepared, batch: int, device: str, reps: int = 5) -> float:
    """Samples/s of the trainer's CPU side alone (crops from the cache, copy to
    the device): if it is below the step rate, the data path is the limit."""
    from hear_abt.train.data import MelCache, global_batch

    cache = MelCache.open(prep.cache)
    dev = torch.device(device)
    t0 = time.perf_counter()
    for step in range(reps):
        idx, u = global_batch(len(cache), batch, step, 0)
        cache.crops(idx, u, 96).to(dev, non_blocking=True)
    sync(dev)
    return batch * reps / (time.perf_counter() - t0)


def embed_rtf(prep: Prepared, device: str, name: str, seconds: float, batch: int, repeat: int) -> dict:
    """Real-time factors (audio seconds per second) of timestamp and scene
    embeddings, best of `repeat` after a warm-up."""
    import hear_abt

    dev = torch.device(device)
    model = random_model(name, prep).to(dev)
    x = prep.clips(seconds, batch, dev)
    out = {}
    for kind, fn in (("timestamp", hear_abt.get_timestamp_embeddings), ("scene", hear_abt.get_scene_embeddings)):
        fn(x, model)
        sync(dev)
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(x, model)
            sync(dev)
            best = min(best, time.perf_counter() - t0)
        out[f"rtf_{kind}"] = seconds * batch / best
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        hear_abt.get_timestamp_embeddings(x, model)
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


# ----------------------------------------------------------------- driver


def run_all(device: str, quick: bool, prep_dir: Path, out: Path, only: set[str] | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no GPU")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    report: dict[str, Any] = {"device": name, "torch": torch.__version__, "quick": quick, "rows": []}
    rows = report["rows"]

    def record(section: str, item: str, fn: Callable[[], Any], fmt: Callable[[Any], str] = lambda r: "") -> Any:
        if only and section not in only:
            return None
        t0 = time.perf_counter()
        try:
            r = fn()
            status, detail = "ok", fmt(r)
        except NotRun as e:
            r, status, detail = None, "not run", str(e)
        except (Exception, SystemExit) as e:  # a failing check is a finding (the trainer exits on bad input): record it and go on
            r, status, detail = None, "FAILED", f"{type(e).__name__}: {e}"[:600]
            traceback.print_exc()
        rows.append({"section": section, "item": item, "status": status, "detail": detail, "result": r,
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(f"[{time.perf_counter() - t_start:6.0f} s] {section} | {item} | {status} | {detail}", flush=True)
        report["wall_s"] = round(time.perf_counter() - t_start, 1)
        write_report(report, out, quiet=True)  # after every row: a run cut off by a time limit keeps what it measured
        return r

    for mod in ("numpy", "torchaudio", "tqdm"):  # what the trainer and the embeddings import
        record("setup", f"module {mod}", lambda mod=mod: __import__(mod).__version__, lambda v: v)

    try:
        prep = Prepared(prep_dir)
    except FileNotFoundError as e:
        rows.append({"section": "setup", "item": "prepared folder", "status": "not run", "detail": str(e), "result": None, "seconds": 0})
        print(e)
        return write_report(report, out)

    encoders = list(ENCODERS)
    # correctness
    record("correctness", f"every encoder on {device} == CPU (rtol {EMB_RTOL}, TF32 off; cosine >= {EMB_MIN_COSINE_DEFAULT} with defaults)",
           lambda: check_encoders_match_cpu(prep, device, encoders, 2.0 if quick else 4.0),
           lambda r: "max |diff|: " + ", ".join(f"{k} {v['max_abs_diff']:.1e}" for k, v in r.items()))
    record("correctness", "bf16 trainer step finite, loss close to fp32",
           lambda: check_bf16_step(prep, device, 16 if quick else 256, (256, 128) if quick else (8192, 1048)),
           lambda r: f"fp32 {r['loss_fp32']:.2f}, bf16 {r['loss_bf16']:.2f} (rel {r['rel_diff']:.4f} <= {BF16_LOSS_RTOL})")
    record("correctness", f"torchrun 1 process, {'NCCL + SyncBatchNorm' if dev.type == 'cuda' else 'gloo + GlobalBatchNorm'}, 2 steps",
           lambda: check_torchrun(prep, device, 8 if quick else 128),
           lambda r: f"losses {', '.join(f'{v:.2f}' for v in r['losses'])}; {r['sync_bn_layers']} {r['bn_kind']} layers; trainer: 2 steps + export")
    record("correctness", f"hear-validator hear_abt --device {device}", lambda: check_validator(device) if not quick else _raise(NotRun("skipped by --quick (tests/test_validator.py covers CPU)")),
           lambda r: r["tail"])

    # training throughput
    steps = 2 if quick else 8
    grid = ([(16, "bf16", False, False), (16, "off", False, False)] if quick else  # quick: a 256-128 projector
            [(128, "bf16", False, False), (512, "bf16", False, False), (1024, "bf16", False, False), (1024, "off", False, False),
             (1024, "bf16", True, False), (1024, "bf16", False, True), (1024, "bf16", True, True)])
    compiled = [g for g in grid if g[3]]  # compiling takes minutes: measured last, after the embeddings

    def train_row(batch: int, amp: str, cl: bool, comp: bool) -> None:
        record("train", f"batch {batch}, {'bf16' if amp == 'bf16' else 'fp32'}, channels_last {'on' if cl else 'off'}, compile {'on' if comp else 'off'}",
               lambda: train_throughput(prep, device, batch, amp, cl, comp, steps, (256, 128) if quick else (8192, 1048)),
               lambda r: f"{r['samples_per_s']:.0f} two-view samples/s, peak mem {r['peak_mem_mb']:.0f} MB")

    for row in grid:
        if row not in compiled:
            train_row(*row)
    top = grid[2][0] if not quick else grid[0][0]
    record("train", f"data path alone (crops from the cache + copy), batch {top}", lambda: data_path_rate(prep, top, device),
           lambda r: f"{r:.0f} samples/s")

    # embeddings
    lengths, batches = ((2,), (2,)) if quick else ((10, 120), (1, 16))
    for name in encoders:
        for seconds in lengths:
            for b in batches:
                record("embed", f"{name}, {seconds} s clips, batch {b}", lambda: embed_rtf(prep, device, name, seconds, b, 1 if quick else 3),
                       lambda r: f"timestamp {r['rtf_timestamp']:.0f}x, scene {r['rtf_scene']:.0f}x real time"
                       + (f", peak mem {r['peak_mem_mb']:.0f} MB" if "peak_mem_mb" in r else ""))
    for row in compiled:
        train_row(*row)
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    return write_report(report, out)


def _raise(e: Exception):
    raise e


def write_report(report: dict, out: Path, quiet: bool = False) -> dict:
    lines = [f"GPU check on {report['device']}, torch {report['torch']}{' (--quick)' if report['quick'] else ''}, "
             f"{report.get('wall_s', 0):.0f} s; command: `python -m tools.gpu_check`", "",
             "| section | item | status | figures |", "|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['section']} | {r['item']} | {r['status']} | {r['detail'].replace('|', '/')} |")
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp = out / "gpu_check.json.tmp"
    tmp.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    tmp.replace(out / "gpu_check.json")
    if not quiet:
        print(f"wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'}")
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", action="store_true", help="build the prepared folder here (needs soundfile) and exit")
    ap.add_argument("--prepared", type=Path, default=DEFAULT_PREP, help=f"prepared folder (default {DEFAULT_PREP.relative_to(REPO)})")
    ap.add_argument("--clips", type=int, default=1100, help="with --prepare: clips in the cache (>= the largest batch)")
    ap.add_argument("--from-cache", type=Path, metavar="CACHE", help="with --prepare: link this built log-mel cache instead of building one")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes (the CPU path CI runs)")
    ap.add_argument("--only", action="append", choices=["correctness", "train", "embed"], help="run only these sections")
    ap.add_argument("--out", type=Path, default=Path("gpu_check_out"))
    args = ap.parse_args(argv)
    if args.from_cache and not args.prepare:
        raise SystemExit("--from-cache applies to --prepare only")
    if args.prepare:
        if args.from_cache:
            prepare_from_cache(args.from_cache, args.prepared)
        else:
            prepare(args.prepared, args.clips)
        return 0
    report = run_all(args.device, args.quick, args.prepared, args.out, set(args.only) if args.only else None)
    return 1 if any(r["status"] == "FAILED" for r in report["rows"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
