"""`hear-abt`: make, inspect and use checkpoints from the command line."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

import torch

from .errors import HearAbtError

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif")


def _audio_files(paths: Sequence[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
        else:
            out.append(p)
    return out


def _norm_stats_from_audio(paths: Sequence[str | Path]) -> tuple[float, float]:
    from .audio_io import read_audio
    from .frontend import LogMel, measure_norm_stats

    files = _audio_files(paths)
    if not files:
        raise SystemExit(f"no audio files under {list(map(str, paths))}")
    lm = LogMel()
    return measure_norm_stats(lm(read_audio(f)[0].unsqueeze(0)) for f in files)


def cmd_init(args: argparse.Namespace) -> None:
    from .checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
    from .encoders import build_encoder
    from .frontend import MelConfig

    if args.norm_stats:
        stats, source = tuple(args.norm_stats), "given on the command line"
    elif args.stats_from and Path(args.stats_from).suffix == ".pt":
        stats, source = tuple(load_checkpoint(args.stats_from)["norm_stats"]), f"copied from {args.stats_from}"
    else:
        where = args.stats_from or EXAMPLES_DIR
        label = args.stats_from or "the bundled example clip"
        stats, source = _norm_stats_from_audio([where]), f"measured on {label}"
    torch.manual_seed(args.seed)
    enc = build_encoder(args.encoder)
    ckpt = make_checkpoint(
        encoder_name=args.encoder,
        encoder_kwargs={},
        mel=MelConfig().to_dict(),
        norm_stats=stats,
        state_dict=enc.state_dict(),
        provenance={"kind": "random-weights", "seed": args.seed, "norm_stats_source": source},
    )
    save_checkpoint(ckpt, args.output)
    print(f"wrote random-weights {args.encoder} checkpoint to {args.output} (norm stats {source})")


def cmd_info(args: argparse.Namespace) -> None:
    from .checkpoint import load_checkpoint
    from .hear_api import default_checkpoint_path

    path = args.checkpoint or default_checkpoint_path()
    ck = load_checkpoint(path)
    n = sum(v.numel() for v in ck["state_dict"].values() if v.is_floating_point())
    info = {
        "file": str(path),
        "format_version": ck["format_version"],
        "encoder": ck["encoder"],
        "parameters_and_buffers": n,
        "mel": ck["mel"],
        "norm_stats": ck["norm_stats"],
        "step": ck["step"],
        "provenance": ck["provenance"],
        "train_config": "present" if ck.get("train_config") else None,
    }
    print(json.dumps(info, indent=2))


def _check_output_names(files: Sequence[Path]) -> list[Path]:
    """Outputs are named <stem>.*.npy in one folder, so two inputs with the same
    stem (a.wav, a.flac, x/a.wav) would overwrite each other: refuse before
    embedding anything. An error (not renamed outputs) keeps every output name
    predictable from its input. The same file given twice is embedded once."""
    unique = list(dict.fromkeys(f.resolve() for f in files))
    by_stem: dict[str, list[Path]] = {}
    for f in unique:
        by_stem.setdefault(f.stem, []).append(f)
    clashes = {s: fs for s, fs in by_stem.items() if len(fs) > 1}
    if clashes:
        listed = "; ".join(f"{s}: {', '.join(map(str, fs))}" for s, fs in sorted(clashes.items()))
        raise ValueError(
            f"inputs with the same name would overwrite each other's <name>.*.npy outputs ({listed}); "
            "embed them into different --output folders or rename them"
        )
    return unique


def cmd_embed(args: argparse.Namespace) -> None:
    import numpy as np
    from tqdm import tqdm

    from . import get_scene_embeddings, get_timestamp_embeddings, load_model
    from .audio_io import AudioReadError, read_audio

    files = _audio_files(args.files)
    if not files:
        raise SystemExit("no audio files given")
    files = _check_output_names(files)
    model = load_model(args.model or "").to(args.device)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for f in tqdm(files, desc="embedding", unit="file", disable=None):
        try:
            wav, _ = read_audio(f, model.sample_rate)
        except AudioReadError as e:
            logging.error("skipped: %s", e)
            failed += 1
            continue
        x = wav.unsqueeze(0).to(args.device)
        stem = out / f.stem
        np.save(f"{stem}.scene.npy", get_scene_embeddings(x, model)[0].cpu().numpy())
        if args.timestamps:
            emb, ts = get_timestamp_embeddings(x, model)
            np.save(f"{stem}.timestamps.npy", emb[0].cpu().numpy())
            np.save(f"{stem}.times_ms.npy", ts[0].cpu().numpy())
    print(f"embedded {len(files) - failed} of {len(files)} files into {out}")
    if failed:
        raise SystemExit(1)


def build_parser() -> argparse.ArgumentParser:
    from .encoders import ENCODERS
    from .version import __version__

    p = argparse.ArgumentParser(
        prog="hear-abt",
        description=__doc__,
        epilog="`hear-abt COMMAND --help` explains each command. Training: python -m hear_abt.train --help.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log resampling, down-mixing and skips")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pi = sub.add_parser(
        "init",
        help="write a random-weights checkpoint (the %%RAND reference)",
        description="Write a checkpoint of an untrained encoder: the reference that %RAND (relative gain over "
        "random weights) compares a trained checkpoint against. Normalisation stats come from --norm-stats, "
        "--stats-from, or else the bundled example clip.",
    )
    pi.add_argument(
        "--encoder", default="audiontt", choices=sorted(ENCODERS), metavar="NAME",
        help=f"encoder architecture, one of: {', '.join(sorted(ENCODERS))} (default: %(default)s)",
    )
    pi.add_argument("-o", "--output", required=True, metavar="FILE.pt", help="where to write the checkpoint")
    pi.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: %(default)s)")
    g = pi.add_mutually_exclusive_group()
    g.add_argument(
        "--norm-stats", type=float, nargs=2, metavar=("MEAN", "STD"),
        help="log-mel normalisation mean and std to store, given directly",
    )
    g.add_argument(
        "--stats-from", metavar="PATH",
        help="a checkpoint to copy normalisation stats from (exact %%RAND reference), or audio "
        "files/folder to measure them on (default: the bundled example clip)",
    )
    pi.set_defaults(func=cmd_init)

    pn = sub.add_parser(
        "info", help="print what a checkpoint is",
        description="Print a checkpoint's encoder, mel config, normalisation stats, step and provenance as JSON.",
    )
    pn.add_argument("checkpoint", nargs="?", default="", help="checkpoint file (default: the bundled one)")
    pn.set_defaults(func=cmd_info)

    pe = sub.add_parser(
        "embed", help="embed audio files (any sample rate/channels) to .npy",
        description="Embed audio files with a checkpoint: each file is down-mixed and resampled to 16 kHz, and "
        "OUTPUT/<name>.scene.npy is written (with --timestamps also <name>.timestamps.npy and <name>.times_ms.npy). "
        "Unreadable files are reported and skipped (exit status 1).",
    )
    pe.add_argument("files", nargs="+", metavar="FILE_OR_DIR", help="audio files, or folders searched recursively")
    pe.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (created if missing)")
    pe.add_argument("--model", metavar="FILE.pt", help="checkpoint (default: the bundled one)")
    pe.add_argument("--timestamps", action="store_true", help="also write timestamp embeddings and their times (ms)")
    pe.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device to embed on, e.g. cpu, cuda, cuda:1 (default: %(default)s)",
    )
    pe.set_defaults(func=cmd_embed)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        args.func(args)
    except (HearAbtError, ValueError, FileNotFoundError, TypeError) as e:
        print(f"hear-abt {args.command}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except BrokenPipeError:
        # `hear-abt info ... | head`: the reader left early, which is not an error worth a traceback.
        # Point stdout at devnull so the interpreter's final flush cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
