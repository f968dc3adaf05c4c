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

from .cores import usable_cores
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


def cmd_embed(args: argparse.Namespace) -> None:
    from . import load_model
    from .embed_corpus import embed_corpus, list_jobs, parse_shard, read_list, shard

    if not args.files and not args.from_list:
        raise ValueError("no audio files given: name files or folders, or --from-list FILE ('-': standard input)")
    jobs, problems = list_jobs(args.files, read_list(args.from_list) if args.from_list else (), args.layout)
    for msg in problems:
        logging.error("skipped: %s", msg)
    index, count = parse_shard(args.shard)
    jobs = shard(jobs, index, count)
    device = args.device
    if device == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per process
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    model = load_model(args.model or "").to(device)
    workers = usable_cores() if args.workers is None else args.workers
    summary = embed_corpus(
        model, jobs, args.output, fmt=args.format, timestamps=args.timestamps, batch_size=args.batch_size,
        workers=workers, skip_existing=args.skip_existing, max_seconds=args.max_duration, quiet=args.quiet,
    )
    summary.total += len(problems)
    summary.failures += problems
    where = f" (shard {index}/{count})" if count > 1 else ""
    print(summary.line(Path(args.output)) + where)
    if summary.failures:
        raise SystemExit(1)


def cmd_export(args: argparse.Namespace) -> None:
    from . import load_model
    from .export import export_model

    model = load_model(args.model or "")
    try:
        path = export_model(model, args.output, args.format)
    except ModuleNotFoundError as e:
        raise ValueError(f"{e}: ONNX export needs the export extra: pip install 'hear-abt[export]'") from None
    d = model.scene_embedding_size
    print(f"wrote {args.format} model to {path}: waveform [batch, samples] float32 at {model.sample_rate} Hz -> "
          f"frames [batch, time, {d}] every {model.frame_ms:g} ms, scene [batch, {d}]")


def _add_embed_parser(sub: argparse._SubParsersAction) -> None:
    """The embed command's options: many, since it also serves whole corpora."""
    pe = sub.add_parser(
        "embed", help="embed audio files or whole corpora (any sample rate/channels) to .npy or .npz",
        description="Embed audio files with a checkpoint: each file is down-mixed and resampled to 16 kHz. "
        "A file named directly is written as OUTPUT/<name>.scene.npy; a folder's files mirror the folder "
        "(a/x.wav -> OUTPUT/a/x.scene.npy). --timestamps adds <name>.timestamps.npy and <name>.times_ms.npy; "
        "--format npz writes one <name>.npz with openl3's keys (embedding, timestamps in seconds) and scene. "
        "Outputs are written atomically, so a killed run can resume with --skip-existing. Bad files are "
        "reported and skipped; the exit status is 1 if any failed.",
    )
    pe.add_argument("files", nargs="*", metavar="FILE_OR_DIR", help="audio files, or folders searched recursively")
    pe.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (created if missing)")
    pe.add_argument("--from-list", metavar="FILE", help="also embed the paths listed in FILE, one a line ('-': stdin)")
    pe.add_argument("--model", metavar="FILE.pt", help="checkpoint (default: the bundled one)")
    pe.add_argument("--timestamps", action="store_true", help="also write timestamp embeddings and their times (ms)")
    pe.add_argument("--format", choices=("npy", "npz"), default="npy", help="output files (default: %(default)s)")
    pe.add_argument(
        "--layout", choices=("mirror", "flat"), default="mirror",
        help="mirror: outputs repeat the folders' tree; flat: all in OUTPUT by file name (default: %(default)s)",
    )
    pe.add_argument("--skip-existing", action="store_true", help="leave files whose outputs are all there (resume)")
    pe.add_argument(
        "--workers", type=int, metavar="N",
        help="processes that decode and resample while the model embeds; 0: in the main process "
        "(default: the number of cores)",
    )
    pe.add_argument(
        "--batch-size", type=int, default=16, metavar="N",
        help="clips of equal length embedded together (no padding; default: %(default)s)",
    )
    pe.add_argument(
        "--shard", metavar="I/N",
        help="embed only the I-th of N fixed shares of the sorted file list (0 <= I < N); default: torchrun's "
        "RANK/WORLD_SIZE when set, else everything",
    )
    pe.add_argument(
        "--max-duration", type=float, default=3600.0, metavar="SECONDS",
        help="refuse longer files, from their header, before decoding them (default: %(default)g)",
    )
    pe.add_argument("-q", "--quiet", action="store_true", help="no progress bar (it is off anyway when not on a terminal)")
    pe.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device to embed on, e.g. cpu, cuda, cuda:1 (default: %(default)s; under torchrun cuda:LOCAL_RANK)",
    )
    pe.set_defaults(func=cmd_embed)


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

    _add_embed_parser(sub)

    px = sub.add_parser(
        "export", help="export the model to ONNX or TorchScript (log-mel included)",
        description="Write the model as one graph from a 16 kHz mono waveform [batch, samples] to frame features "
        "[batch, time, D] and the scene embedding [batch, D]. Inside: STFT, mel, log, normalisation, encoder, "
        "scene pooling; batch and length are dynamic. Outside: resampling, down-mixing, padding of clips shorter "
        "than one frame, and the HEAR timestamp pooling. ONNX needs `pip install 'hear-abt[export]'`.",
    )
    px.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="the file's format")
    px.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write it (.onnx or .pt)")
    px.add_argument("--model", metavar="FILE.pt", help="checkpoint (default: the bundled one)")
    px.set_defaults(func=cmd_export)
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
