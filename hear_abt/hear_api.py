"""The HEAR 2021 API: load_model, get_scene_embeddings, get_timestamp_embeddings.

heareval imports `hear_abt` and calls these three names and nothing else.
Audio is float32 in [-1, 1], [n_sounds, n_samples] at 16 kHz, on the model's
device; outputs are float32 on that device. A clip's embeddings never depend
on its batch mates (the encoder always runs in eval mode, normalisation uses
fixed statistics from the checkpoint).
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from .checkpoint import load_checkpoint
from .embed import frame_features, pool_clip, pool_ranges, pool_windows, window_index, windows_hold_frames
from .frontend import MelConfig
from .model import ABTModel, EmbeddingOptions

# A float peak above this is taken for unscaled integer PCM, not for the small
# overshoot that resampling can leave in real [-1, 1] audio.
MAX_PEAK = 2.0


def default_checkpoint_path() -> Path:
    """The bundled checkpoint: hear_abt/checkpoints/ in an installed wheel,
    checkpoints/ at the repository root in a source checkout."""
    here = Path(__file__).resolve().parent
    for folder in (here / "checkpoints", here.parent / "checkpoints"):
        if (folder / "default.pt").is_file():
            return folder / "default.pt"
    return here / "checkpoints" / "default.pt"


def load_model(model_file_path: str = "", **options) -> ABTModel:
    """Load an ABT encoder for the HEAR API.

    model_file_path: a hear-abt checkpoint (.pt); "" loads the bundled default.
    options: see EmbeddingOptions (scene_pooling, timestamp_window_ms,
        chunk_seconds); unknown options raise TypeError.
    """
    opts = EmbeddingOptions.from_kwargs(options)
    path = Path(model_file_path) if model_file_path else default_checkpoint_path()
    if not model_file_path and not path.is_file():
        raise FileNotFoundError(
            "no default checkpoint is bundled with this hear-abt install, and load_model() "
            "never falls back to random weights. Pass a checkpoint: load_model('model.pt') "
            "(hear-validator hear_abt --model model.pt); make a random-weights one with "
            "`hear-abt init -o model.pt`, or train one with `python -m hear_abt.train`."
        )
    ckpt = load_checkpoint(path)
    model = ABTModel(
        ckpt["encoder"]["name"],
        ckpt["encoder"]["kwargs"],
        MelConfig.from_dict(ckpt["mel"]),
        tuple(ckpt["norm_stats"]),
        opts,
    )
    try:
        model.encoder.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit encoder {ckpt['encoder']!r}: {e}") from None
    return model.eval()


def _check_audio(audio: torch.Tensor, model: ABTModel) -> torch.Tensor:
    """Validate HEAR input; returns float32 audio. Raises with the fix in the message."""
    if not isinstance(model, ABTModel):
        raise TypeError(f"model must come from hear_abt.load_model(), got {type(model).__name__}")
    if not isinstance(audio, torch.Tensor):
        raise TypeError(
            f"audio must be a torch.Tensor [n_sounds, n_samples], got {type(audio).__name__}; "
            "use torch.from_numpy(x).float()"
        )
    if audio.ndim != 2:
        fix = (
            "add the batch axis: audio.unsqueeze(0)"
            if audio.ndim == 1
            else "down-mix channels first, e.g. audio.mean(dim=1) for [n, channels, samples]"
        )
        raise ValueError(f"audio must be 2-D [n_sounds, n_samples], got shape {tuple(audio.shape)}; {fix}")
    if not audio.is_floating_point():
        raise TypeError(
            f"audio must be floating point in [-1, 1], got {audio.dtype}; for 16-bit PCM use "
            "audio.float() / 32768"
        )
    if audio.device != model.device:
        raise ValueError(
            f"audio is on {audio.device} but the model is on {model.device}; "
            f"move one of them: audio.to({str(model.device)!r})"
        )
    if audio.shape[0] and audio.shape[1] == 0:
        raise ValueError("audio has 0 samples per clip; every clip needs at least one sample")
    audio = audio.float()
    if audio.numel():
        finite = torch.isfinite(audio).all(dim=1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten().tolist()
            raise ValueError(f"audio clips {bad[:10]} contain NaN or Inf samples; clean or drop them")
        peak = float(audio.abs().max())
        if peak > MAX_PEAK:
            raise ValueError(
                f"audio peak is {peak:g}, but HEAR audio is float in [-1, 1]; "
                "this looks like unscaled integer PCM (divide by 32768) or an un-normalised signal"
            )
        if peak > 1.0:
            warnings.warn(f"audio peak {peak:g} exceeds 1.0; embedding it unchanged", stacklevel=3)
    return audio


@contextmanager
def _eval_mode(model: ABTModel) -> Iterator[None]:
    """Dropout and batch statistics would tie a clip's embedding to its batch mates."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _min_samples(model: ABTModel) -> int:
    """Shortest clip that yields one encoder frame; shorter ones are zero-padded."""
    return (model.encoder.frame_stride - 1) * model.mel_config.hop_length


def _frames(audio: torch.Tensor, model: ABTModel) -> torch.Tensor:
    n = audio.shape[1]
    short = _min_samples(model) - n
    if short > 0:  # appended silence: the clip's own samples are all kept
        audio = torch.nn.functional.pad(audio, (0, short))
    return frame_features(
        model.frontend, model.encoder, model.norm_mean, model.norm_std, audio, model.chunk_frames
    )


def _timestamps(n_samples: int, model: ABTModel, device: torch.device) -> torch.Tensor:
    """Window centres in ms: 0, hop_ms, 2 hop_ms, ... up to the clip's end
    (hop_ms: the encoder's frame step, or 40 ms when that exceeds 50 ms)."""
    duration_ms = 1000.0 * n_samples / model.sample_rate
    k = int(duration_ms // model.hop_ms) + 1
    return torch.arange(k, device=device, dtype=torch.float64).mul(model.hop_ms).float()


def _pool_timestamps(frames: torch.Tensor, ts: torch.Tensor, model: ABTModel) -> torch.Tensor:
    """Fast path: one timestamp per frame and fixed windows that each hold a
    frame. Otherwise (coarse frames, or windows that hold no frame: narrower
    than a frame, or past the clip's last frame) each window takes its frames
    or at least the nearest one (window_index)."""
    before, after = model.window_before, model.window_after
    if model.hop_ms == model.frame_ms and windows_hold_frames(len(ts), frames.shape[1], before, after):
        return pool_windows(frames, len(ts), before, after)
    lo, hi = window_index(ts, model.frame_ms, model.frame_offset_ms, model.options.timestamp_window_ms, frames.shape[1])
    return pool_ranges(frames, lo, hi)


def get_timestamp_embeddings(audio: torch.Tensor, model: ABTModel) -> tuple[torch.Tensor, torch.Tensor]:
    """audio [n_sounds, n_samples] -> (embeddings [n_sounds, n_timestamps, D],
    timestamps [n_sounds, n_timestamps] in ms).

    One pass of frontend + encoder per clip; each timestamp's embedding is the
    mean + max of the encoder's frame features whose centres lie within
    timestamp_window_ms (default 960) around it (at least the nearest frame).
    Hop: the frame step (AudioNTT: 40 ms) when it is at most 50 ms, else 40 ms.
    """
    audio = _check_audio(audio, model)
    ts = _timestamps(audio.shape[1], model, audio.device)
    n, d = audio.shape[0], model.timestamp_embedding_size
    if n == 0:
        return audio.new_zeros(0, len(ts), d), audio.new_zeros(0, len(ts))
    with _eval_mode(model):
        frames = _frames(audio, model)
        emb = _pool_timestamps(frames, ts, model)
    return emb, ts.expand(n, -1).contiguous()


def get_scene_embeddings(audio: torch.Tensor, model: ABTModel) -> torch.Tensor:
    """audio [n_sounds, n_samples] -> [n_sounds, D].

    Default (scene_pooling="clip"): mean + max of the encoder's frame features
    over the whole clip, as the paper's wrapper did; "timestamps": the mean of
    the timestamp embeddings.
    """
    if model.options.scene_pooling == "timestamps":
        emb, _ = get_timestamp_embeddings(audio, model)
        return emb.mean(dim=1)
    audio = _check_audio(audio, model)
    if audio.shape[0] == 0:
        return audio.new_zeros(0, model.scene_embedding_size)
    with _eval_mode(model):
        return pool_clip(_frames(audio, model))
