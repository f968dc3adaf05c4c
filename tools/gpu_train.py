"""Train one or more runs to a wall-clock budget each, on a lent GPU.

A lent GPU comes for minutes, not hours, so a run is sized by time: a short
timed run through the whole trainer measures two-view samples/s, and the
real run gets the step count that fills its budget, with a warm-up of 5% of
its steps. Each finished run's encoder is exported (fp16) beside a JSON
summary of every run (config, throughput, loss curve, wall time).

    python -m tools.gpu_train --data CACHE_OR_AUDIO --out DIR --budget-s 100 \\
        --run lr0.8:lr_weights=0.8,lr_biases=0.0192 --run lr1.6:lr_weights=1.6,lr_biases=0.0384

Used by scripts/gpu_lease.sh; docs/gpu.md has the figures it gave.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from hear_abt.train.config import TrainConfig, parse_overrides
from hear_abt.train.data import MelCache
from hear_abt.train.loop import export_encoder, load_newest_state, train

REPO = Path(__file__).resolve().parents[1]

WARMUP_SHARE = 0.05
PROBE_STEPS = 12  # timed steps of the throughput probe (after 2 warm-up steps)


def measure_rate(cfg: TrainConfig) -> float:
    """Two-view samples/s of this config through the whole trainer."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = cfg.replace({"run_dir": str(Path(tmp) / "probe"), "steps": PROBE_STEPS + 2, "ckpt_every": 0, "log_every": 10**9})
        return float(train(probe)["samples_per_s"])


def steps_for(budget_s: float, rate: float, batch: int, overhead_s: float) -> int:
    """Steps that fit the budget after fixed costs (state writes, export)."""
    return max(10, int((budget_s - overhead_s) * rate / batch))


def _top_level_split(text: str) -> list[str]:
    """Split on commas outside brackets, so a list value (rrc_freq_scale=[1.0,1.0]) stays whole."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def parse_run(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.partition(":")
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise SystemExit(f"--run {text!r}: give NAME:KEY=VALUE,... with a name of letters, digits, '.', '-' or '_'")
    pairs = [p for p in _top_level_split(rest) if p]
    if any("=" not in p for p in pairs):
        raise SystemExit(f"--run {text!r}: each setting is KEY=VALUE")
    return name, dict(p.split("=", 1) for p in pairs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="log-mel cache folder or audio folder/manifest (as the trainer's --data)")
    ap.add_argument("--out", type=Path, required=True, help="where NAME.pt and runs.json go")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "gpu_train", help="run folders (training states: large)")
    ap.add_argument("--budget-s", type=float, required=True, help="wall-clock seconds per run, all included")
    ap.add_argument("--overhead-s", type=float, default=15.0, help="seconds of each budget kept for set-up, state writes and export")
    ap.add_argument("--run", action="append", required=True, metavar="NAME:KEY=VALUE,...", help="one run: its name and its config settings")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="settings shared by every run")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    runs = [parse_run(r) for r in args.run]
    if len({n for n, _ in runs}) != len(runs):
        raise SystemExit("--run names must differ")
    if torch.device(args.device).type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"device": torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "cpu",
                     "torch": torch.__version__, "budget_s": args.budget_s, "runs": {}}
    configs = {}
    for name, settings in runs:  # every config is checked before the first run spends device time
        try:
            configs[name] = TrainConfig().replace({"data": args.data, "device": args.device, "plot_every": 0, "log_every": 10, "workers": 0,
                                                   **parse_overrides([*args.set, *(f"{k}={v}" for k, v in settings.items())])})
        except (ValueError, TypeError) as e:
            raise SystemExit(f"--run {name}: config error: {e}") from None
    for name, cfg in configs.items():
        t0 = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()  # each run's own peak
        rate = measure_rate(cfg)
        left = args.budget_s - (time.perf_counter() - t0)
        n = steps_for(left, rate, cfg.batch_size, args.overhead_s)
        run_dir = args.work / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        cfg = cfg.replace({"run_dir": str(run_dir), "steps": n, "ckpt_every": 0})  # a lent machine keeps nothing: no mid-run states
        if Path(args.data, "index.json").is_file():  # a built cache: the warm-up is set in steps
            per_epoch = len(MelCache.open(args.data)) // cfg.batch_size
            if per_epoch:
                cfg = cfg.replace({"warmup_epochs": max(1, round(WARMUP_SHARE * n)) / per_epoch})
        print(f"[{name}] probe {rate:.0f} samples/s -> {n} steps of {cfg.batch_size} in ~{left:.0f} s", flush=True)
        record = {"config": cfg.to_dict(), "probe_samples_per_s": rate, "steps": n}
        try:
            result = train(cfg)
            record.update(samples_per_s=result["samples_per_s"], final_loss=result["losses"][-1],
                          peak_mem_mb=torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None)
            export_encoder(load_newest_state(run_dir)[0], args.out / f"{name}.pt", half=True)
            with (run_dir / "log.csv").open(newline="", encoding="utf-8") as f:
                record["log"] = list(csv.DictReader(f))
            record["status"] = "ok"
        except (Exception, SystemExit) as e:  # one failed run must not cost the next its budget
            record["status"] = f"FAILED: {type(e).__name__}: {e}"[:800]
            print(f"[{name}] {record['status']}", flush=True)
        record["wall_s"] = round(time.perf_counter() - t0, 1)
        summary["runs"][name] = record
        (args.out / "runs.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        print(f"[{name}] {record['status']} in {record['wall_s']} s: {json.dumps({k: v for k, v in record.items() if k in ('steps', 'samples_per_s', 'final_loss', 'peak_mem_mb')})}", flush=True)
        shutil.rmtree(run_dir, ignore_errors=True)  # the states are GBs; the export is kept
    return 0 if all(r["status"] == "ok" for r in summary["runs"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
