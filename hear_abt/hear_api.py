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

from . import embed
from .checkpoint import load_checkpoint
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
    audio = audio.detach().float()  # embeddings never carry gradients; checking a tracked tensor warns
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


def get_timestamp_embeddings(audio: torch.Tensor, model: ABTModel) -> tuple[torch.Tensor, torch.Tensor]:
    """audio [n_sounds, n_samples] -> (embeddings [n_sounds, n_timestamps, D],
    timestamps [n_sounds, n_timestamps] in ms).

    One pass of frontend + encoder per clip; each timestamp's embedding is the
    mean + max of the encoder's frame features whose centres lie within
    timestamp_window_ms (default 960) around it (at least the nearest frame).
    Hop: the frame step (AudioNTT: 40 ms) when it is at most 50 ms, else 40 ms.
    """
    audio = _check_audio(audio, model)
    with _eval_mode(model):
        return embed.timestamp_embeddings(model, audio)


def get_scene_embeddings(audio: torch.Tensor, model: ABTModel) -> torch.Tensor:
    """audio [n_sounds, n_samples] -> [n_sounds, D].

    Default (scene_pooling="clip"): mean + max of the encoder's frame features
    over the whole clip, as the paper's wrapper did; "timestamps": the mean of
    the timestamp embeddings.
    """
    audio = _check_audio(audio, model)
    with _eval_mode(model):
        return embed.scene_embeddings(model, audio)
