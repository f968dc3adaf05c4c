"""How far apart two checkpoints' embeddings are on real audio.

    python -m eval.probes.compare_checkpoints A.pt B.pt AUDIO [AUDIO ...] [--limit N]

Prints the mean and minimum cosine similarity, and the largest absolute
difference relative to the largest absolute value, of scene and timestamp
embeddings over the audio files (folders are searched). Used to state the
tolerance of the fp16-stored default checkpoint against its fp32 export; it
also answers "did this change move the embeddings?" for any two checkpoints.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import torch

import hear_abt
from hear_abt.audio_io import read_audio
from hear_abt.cli import _audio_files


def compare(a: str, b: str, files: Sequence) -> dict[str, dict[str, float]]:
    ma, mb = hear_abt.load_model(a), hear_abt.load_model(b)
    cos: dict[str, list[torch.Tensor]] = {"scene": [], "timestamps": []}
    rel: dict[str, float] = {"scene": 0.0, "timestamps": 0.0}
    for f in files:
        x = read_audio(f, ma.sample_rate)[0].unsqueeze(0)
        pairs = {
            "scene": (hear_abt.get_scene_embeddings(x, ma)[0:1], hear_abt.get_scene_embeddings(x, mb)[0:1]),
            "timestamps": (hear_abt.get_timestamp_embeddings(x, ma)[0][0], hear_abt.get_timestamp_embeddings(x, mb)[0][0]),
        }
        for kind, (ea, eb) in pairs.items():
            cos[kind].append(torch.nn.functional.cosine_similarity(ea.double(), eb.double(), dim=-1))
            rel[kind] = max(rel[kind], ((ea - eb).abs().max() / ea.abs().max()).item())
    out = {}
    for kind, values in cos.items():
        c = torch.cat(values)
        out[kind] = {"n": c.numel(), "cosine_mean": c.mean().item(), "cosine_min": c.min().item(),
                     "max_abs_diff_over_max_abs": rel[kind]}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("audio", nargs="+", help="audio files or folders")
    p.add_argument("--limit", type=int, default=0, help="use at most this many files (0: all)")
    args = p.parse_args(argv)
    files = _audio_files(args.audio)
    if args.limit:
        files = files[: args.limit]
    if not files:
        print("no audio files found", file=sys.stderr)
        return 2
    print(json.dumps({"a": args.a, "b": args.b, "files": len(files), **compare(args.a, args.b, files)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
