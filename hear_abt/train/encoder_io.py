"""The encoder crossing a run's boundary: in from a HEAR checkpoint
(init_from: continue pretraining an exported model) and out as one (export)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError, load_checkpoint, make_checkpoint, save_checkpoint
from ..errors import ConfigError
from .config import TrainConfig


def load_init(cfg: TrainConfig) -> dict[str, Any]:
    """The checkpoint named by cfg.init_from, checked against the run's encoder
    and mel settings; ConfigError saying why when it cannot start this run."""
    try:
        ckpt = load_checkpoint(cfg.init_from)
    except (FileNotFoundError, CheckpointError) as e:
        raise ConfigError(f"init_from: {e}") from None
    enc = ckpt["encoder"]
    if (enc["name"], dict(enc["kwargs"])) != (cfg.encoder, dict(cfg.encoder_kwargs)):
        raise ConfigError(f"init_from {cfg.init_from} holds encoder {enc['name']} {dict(enc['kwargs'])}, the run asks for "
                         f"{cfg.encoder} {dict(cfg.encoder_kwargs)}: set --encoder / encoder_kwargs to match")
    if dict(ckpt["mel"]) != dict(cfg.mel):
        raise ConfigError(f"init_from {cfg.init_from} was trained on log-mels {dict(ckpt['mel'])}, the run's are {dict(cfg.mel)}")
    return ckpt


def export_encoder(state: dict, path: str | Path, half: bool = False) -> Path:
    """Write the encoder of a training state as a HEAR checkpoint: the
    projector is dropped (it only serves the loss) and the training config,
    step and data are kept as provenance. half=True stores the weights as
    fp16: half the file, for shipping; they load back as fp32."""
    cfg = TrainConfig.from_dict(state["config"])
    enc = {k[len("encoder."):]: v.contiguous() for k, v in state["model"].items() if k.startswith("encoder.")}
    ckpt = make_checkpoint(
        encoder_name=cfg.encoder,
        encoder_kwargs=cfg.encoder_kwargs,
        mel=cfg.mel,
        norm_stats=tuple(state["norm_stats"]),
        state_dict=enc,
        train_config=cfg.to_dict(),
        step=state["step"],
        provenance={"kind": "abt-pretrained", "data": cfg.data, "n_clips": state.get("n_clips"),
                    "norm_stats_source": f"copied from the init_from checkpoint {cfg.init_from}" if cfg.init_from else "the training log-mel cache"},
        half=half,
    )
    save_checkpoint(ckpt, path)
    return Path(path)
