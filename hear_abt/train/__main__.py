"""`python -m hear_abt.train`: Barlow Twins pretraining (ABT) from the command line.

    python -m hear_abt.train --data /audioset/wavs --run-dir runs/abt
    python -m hear_abt.train --run-dir runs/abt --resume          # continue
    torchrun --nproc_per_node 8 -m hear_abt.train --data ... --run-dir ...
    python -m hear_abt.train --run-dir runs/abt --export abt.pt   # HEAR checkpoint

Values come from, in order: the paper's defaults (TrainConfig), --config
FILE (YAML or JSON), the per-field flags below, then --set KEY=VALUE.
The flags below are the common few; `--print-config` prints every key of
the full config (with the values the options above would give), and any of
them can be set with --set KEY=VALUE or in a --config file.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Sequence

from ..encoders import ENCODERS
from ..errors import HearAbtError
from .config import TrainConfig, load_config_file, parse_overrides

# flag -> config key, for the options people set most.
FLAGS = {
    "data": "data", "run_dir": "run_dir", "cache_dir": "cache_dir", "encoder": "encoder",
    "steps": "steps", "epochs": "epochs", "batch_size": "batch_size", "device": "device", "seed": "seed",
    "init_from": "init_from", "workers": "workers", "lr_scaling": "lr_scaling",
}


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m hear_abt.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("config")
    g.add_argument("--config", help="YAML or JSON file of TrainConfig keys")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any TrainConfig key (repeatable), e.g. --set lambd=0.005 --set encoder_kwargs.dropout=0")
    g.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="audio folder (recursive), CSV manifest with a `path` column, or a built log-mel cache folder")
    g.add_argument("--cache-dir", help="log-mel cache root (default $HEAR_ABT_CACHE or ~/.cache/hear_abt)")
    g.add_argument("--prepare", action="store_true", help="build the log-mel cache and exit (resumes an interrupted "
                   "build; under torchrun, local rank 0 of each node builds that node's copy)")
    g.add_argument("--workers", type=int, help="decoding processes for the cache build (default -1: one per core; 0: none)")
    g = p.add_argument_group("run")
    g.add_argument("--run-dir", help="logs, plots, state.pt and encoder.pt go here")
    g.add_argument("--encoder", help=f"encoder name, one of: {', '.join(sorted(ENCODERS))} (default: {defaults.encoder})")
    g.add_argument("--steps", type=int, help="train this many steps (overrides --epochs)")
    g.add_argument("--epochs", type=float, help=f"train this many passes over the data (default: {defaults.epochs:g})")
    g.add_argument("--batch-size", type=int, help="global batch size (split across processes)")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--lr-scaling", choices=("none", "linear"), help="none: lr_weights / lr_biases as given (default); "
                   "linear: times batch_size / 256 (Barlow Twins' rule)")
    g.add_argument("--seed", type=int, help="seed of the weights, clip order, crops and augmentations")
    g.add_argument("--init-from", metavar="CKPT", help="start the encoder from this HEAR checkpoint (weights and its "
                   "input normalisation; the projector starts fresh): continue pretraining an exported model on new data")
    g.add_argument("--resume", action="store_true", help="continue from the newest valid state in RUN_DIR (state.pt, else state.prev.pt) if there is one")
    g.add_argument("--stop-at", type=int, metavar="STEP", help="save the state and exit after this step (time-limited jobs; continue with --resume)")
    g.add_argument("--export", metavar="PATH", help="write RUN_DIR's encoder as a HEAR checkpoint and exit")
    g.add_argument("--fp16", action="store_true", help="with --export: store the weights as fp16 (half the size)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    return p


def resolve_config(args: argparse.Namespace) -> tuple[TrainConfig, set[str]]:
    """The config and the keys the user set explicitly (for resume checks)."""
    overrides: dict[str, Any] = {}
    if args.config:
        overrides.update(load_config_file(args.config))
    for flag, key in FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    overrides.update(parse_overrides(args.set))
    try:
        return TrainConfig().replace(overrides), {k.partition(".")[0] for k in overrides}
    except (ValueError, TypeError) as e:
        raise SystemExit(f"config error: {e}") from None


def main(argv: Sequence[str] | None = None) -> dict | None:
    """Run the command; an error of the library (a bad config, unusable data,
    no usable state) stops it with its message on stderr and exit status 1."""
    try:
        return _main(argv)
    except HearAbtError as e:
        raise SystemExit(str(e)) from None


def _main(argv: Sequence[str] | None) -> dict | None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg, given = resolve_config(args)
    if args.print_config:
        import json

        print(json.dumps(cfg.to_dict(), indent=1))
        return None
    from . import loop

    if args.fp16 and not args.export:
        raise SystemExit("--fp16 applies to --export only")
    if args.export:
        found = loop.load_newest_state(cfg.run_dir)
        if found is None:
            raise SystemExit(f"--export: no training state at {loop.state_path(cfg.run_dir)}; pass the --run-dir of a run")
        out = loop.export_encoder(found[0], args.export, half=args.fp16)
        print(f"wrote {out}")
        return None
    if not cfg.data and not (args.resume and loop.has_state(cfg.run_dir)):
        raise SystemExit("--data is required: an audio folder or a CSV manifest")
    if args.prepare:
        from . import distributed as D

        if int(os.environ.get("LOCAL_RANK", "0")) != 0:  # one build per node under torchrun
            return None
        cache = loop.open_cache(cfg, D.DistContext())  # CacheBuildBusy is a HearAbtError: main() reports it
        print(f"log-mel cache ready: {cache.folder} ({len(cache)} clips, {cache.index['skipped']} skipped)")
        return None
    try:
        summary = loop.train(cfg, resume=args.resume, given_keys=given, stop_at=args.stop_at)
    except loop.NonFiniteLossError as e:
        raise SystemExit(f"training stopped: {e}") from None
    finally:
        from .distributed import cleanup

        cleanup()
    if int(os.environ.get("RANK", "0")) == 0:
        l = summary["losses"]
        done = f"encoder exported to {summary['exported']}" if summary["exported"] else f"state saved in {summary['run_dir']}"
        print(f"step {summary['step']}: loss {l[0] if l else float('nan'):.2f} -> {l[-1] if l else float('nan'):.2f}; "
              f"{summary['samples_per_s']:.1f} samples/s; {done}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
