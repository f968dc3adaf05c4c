"""Training throughput of the ABT trainer, in two-view samples per second.

Runs the real trainer (log-mel cache -> crops -> augmentations on the device
-> encoder + projector -> loss -> LARS step) for a few steps in a scratch run
folder and prints samples/s, excluding the first two steps (warm-up).

    python -m tools.bench_train                        # CPU, bundled + freedesktop audio
    python -m tools.bench_train --device cuda --steps 50 --cache-dir cache/   # GPU, bf16
    python -m tools.bench_train --channels-last        # compare memory formats

On a machine without soundfile or the audio (a GPU box), pass --data a cache
folder built elsewhere (`python -m hear_abt.train --data AUDIO --cache-dir C
--prepare` prints it: C/<key>).
"""
from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import torch

from hear_abt.train.config import TrainConfig
from hear_abt.train.loop import train

REPO = Path(__file__).resolve().parents[1]


def default_corpus(tmp: Path) -> Path:
    """The bundled example clip and, when installed, the freedesktop sounds,
    in `copies` folders so that a batch of 128 fits in one epoch."""
    import shutil

    folder = tmp / "corpus"
    srcs = [REPO / "hear_abt" / "examples" / "speech_and_bell.wav", *sorted(Path("/usr/share/sounds/freedesktop/stereo").glob("*.oga"))]
    for k in range(max(1, -(-260 // len(srcs)))):
        (folder / f"copy{k}").mkdir(parents=True)
        for f in srcs:
            shutil.copy(f, folder / f"copy{k}")
    return folder


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="audio folder, CSV or built cache folder (default: a small real-audio corpus)")
    p.add_argument("--cache-dir", help="log-mel cache root (default: a scratch folder)")
    p.add_argument("--encoder", default="audiontt")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=6, help="steps timed after 2 warm-up steps")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data or str(default_corpus(tmp))
        cfg = TrainConfig(
            data=data, run_dir=str(tmp / "run"), cache_dir=args.cache_dir or str(tmp / "cache"), encoder=args.encoder,
            batch_size=args.batch_size, steps=args.steps + 2, device=args.device, amp=args.amp,
            channels_last=args.channels_last, compile=args.compile, log_every=10**9, plot_every=0, ckpt_every=0,
        )
        s = train(cfg)
    dev = torch.cuda.get_device_name() if "cuda" in str(args.device) or (args.device == "auto" and torch.cuda.is_available()) else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"{args.encoder} batch {args.batch_size} crop {cfg.crop_frames} frames, channels_last={args.channels_last}, "
          f"amp={args.amp}, {dev}: {s['samples_per_s']:.1f} two-view samples/s over {args.steps} steps")
    return s["samples_per_s"]


if __name__ == "__main__":
    main()
