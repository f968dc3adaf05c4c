"""The hear-abt checkpoint format: one dict, saved atomically, loaded weights-only.

A checkpoint is untrusted input: it is read with torch.load(weights_only=True),
so a pickle that would run code is refused, and every field is validated with
an error that says what is wrong and how to get a good file.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import pickle
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import CheckpointError  # noqa: F401 - raised here, and imported from here by callers

FORMAT_NAME = "hear-abt"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "encoder", "mel", "norm_stats", "state_dict")


def torch_load_untrusted(path: str | Path) -> Any:
    """torch.load with weights_only=True, onto the CPU. Some corruptions make
    torch's weights-only unpickler build a legacy TypedStorage before it fails,
    and its deprecation warning would sit above the caller's own error naming
    the bad file as if it were the problem; it is silenced here (a good file
    never raises it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def content_digest(obj: Any) -> str:
    """A hash of a nested structure of tensors, containers and scalars (dtype,
    shape and bytes of every tensor): stored inside a file when it is written
    and recomputed when it is read, it detects bytes changed on disk that
    torch.load would otherwise return as wrong numbers."""
    h = hashlib.sha256()  # SHA-NI makes it the fastest of hashlib on current x86-64

    def walk(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
        elif isinstance(o, Mapping):
            h.update(f"D{len(o)}".encode())
            for k in sorted(o, key=repr):
                h.update(repr(k).encode())
                walk(o[k])
        elif isinstance(o, (list, tuple)):
            h.update(f"L{len(o)}".encode())
            for v in o:
                walk(v)
        else:
            h.update(f"S{o!r}".encode())

    walk(obj)
    return h.hexdigest()


def _os_error_in(e: BaseException | None) -> OSError | None:
    """The OSError (e.g. ENOSPC) at the root of an exception chain, if any."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.errno is not None:
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it, so a
    kill at any moment leaves either the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error_in(e)
        if cause is not None and cause is not e:  # torch.save wraps ENOSPC in a RuntimeError
            raise OSError(cause.errno, f"writing {path}: {cause.strerror or cause}") from e
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make the renames in `folder` durable (best effort: not every OS allows it)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def make_checkpoint(
    *,
    encoder_name: str,
    encoder_kwargs: Mapping[str, Any],
    mel: Mapping[str, Any],
    norm_stats: tuple[float, float],
    state_dict: Mapping[str, torch.Tensor],
    train_config: Mapping[str, Any] | None = None,
    step: int = 0,
    provenance: Mapping[str, Any] | None = None,
    half: bool = False,
) -> dict[str, Any]:
    """Assemble a checkpoint dict. half=True stores floating weights as fp16
    (they are cast back to fp32 on load)."""
    from .version import __version__

    mean, std = (float(v) for v in norm_stats)
    if not (std > 0 and torch.isfinite(torch.tensor([mean, std])).all()):
        raise ValueError(f"norm_stats must be finite with std > 0, got {(mean, std)}")
    sd = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        sd[k] = v.half() if half and v.is_floating_point() else v.clone()
    prov = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "hear_abt_version": __version__,
        "torch_version": str(torch.__version__),
    }
    prov.update(provenance or {})
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "encoder": {"name": encoder_name, "kwargs": dict(encoder_kwargs)},
        "mel": dict(mel),
        "norm_stats": [mean, std],
        "state_dict": sd,
        "train_config": dict(train_config) if train_config is not None else None,
        "step": int(step),
        "provenance": prov,
    }


def save_checkpoint(ckpt: Mapping[str, Any], path: str | os.PathLike) -> None:
    validate_checkpoint(ckpt, source=str(path))
    atomic_torch_save(dict(ckpt), path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a checkpoint; floating weights come back as fp32."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint not found: {path}. Make a random-weights one with "
            f"`hear-abt init -o {path}` or train one with `python -m hear_abt.train`."
        )
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; pass the path of a .pt checkpoint file")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt, or not written by torch.save)"
        )
    try:
        obj = torch_load_untrusted(path)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path} was refused by the weights-only loader (it holds objects other than "
            f"tensors and plain containers, which could run code when unpickled): "
            f"{str(e).strip().splitlines()[-1]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt?): {type(e).__name__}: {e}"
        ) from None
    validate_checkpoint(obj, source=str(path))
    obj["state_dict"] = {
        k: v.float() if v.is_floating_point() else v for k, v in obj["state_dict"].items()
    }
    return obj


def validate_checkpoint(obj: Any, source: str = "checkpoint") -> None:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a hear-abt checkpoint dict")
    if obj.get("format") != FORMAT_NAME:
        looks_like_sd = obj and all(isinstance(v, torch.Tensor) for v in obj.values())
        hint = (
            " It looks like a plain state_dict; hear-abt checkpoints also carry the encoder "
            "name, mel config and normalisation stats. Make one with `hear-abt init` or the "
            "trainer's export."
            if looks_like_sd
            else " Make one with `hear-abt init` or `python -m hear_abt.train`."
        )
        raise CheckpointError(f"{source} is not a hear-abt checkpoint (no format={FORMAT_NAME!r}).{hint}")
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has checkpoint format_version {version!r}; this hear-abt reads "
            f"version {FORMAT_VERSION}. Install the hear-abt release that wrote it."
        )
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"{source} lacks the keys {missing}")
    enc = obj["encoder"]
    if not (isinstance(enc, Mapping) and isinstance(enc.get("name"), str) and isinstance(enc.get("kwargs"), Mapping)):
        raise CheckpointError(f"{source}: 'encoder' must be {{'name': str, 'kwargs': dict}}, got {enc!r}")
    ns = obj["norm_stats"]
    if not (isinstance(ns, (list, tuple)) and len(ns) == 2 and float(ns[1]) > 0):
        raise CheckpointError(f"{source}: 'norm_stats' must be [mean, std] with std > 0, got {ns!r}")
    sd = obj["state_dict"]
    if not (isinstance(sd, Mapping) and sd and all(isinstance(v, torch.Tensor) for v in sd.values())):
        raise CheckpointError(f"{source}: 'state_dict' must be a non-empty dict of tensors")
