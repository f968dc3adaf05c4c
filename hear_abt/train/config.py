"""TrainConfig: every training knob in one dataclass, defaulting to the paper.

The defaults reproduce ABT (arXiv 2209.14345): AudioNTT, projector
8192-1048, lambda 0.005, batch 128, LARS 0.4 / 0.0048 with weight decay 1e-5,
1 epoch warm-up then cosine, 96-frame crops, BYOL-A augmentations. A run's
resolved config is written beside its logs and inside every checkpoint, so a
checkpoint always says how it was made.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..encoders import ENCODERS
from ..errors import ConfigError
from ..fields import reject_unknown
from ..frontend import MelConfig

LR_SCALINGS = ("none", "linear")
LR_REFERENCE_BATCH = 256  # lr_scaling=linear: the batch the given rates are meant for


@dataclass
class TrainConfig:
    # --- data
    data: str = ""  # folder (searched recursively) or CSV manifest with a `path` column
    run_dir: str = "runs/abt"
    cache_dir: str = ""  # "" -> $HEAR_ABT_CACHE or ~/.cache/hear_abt
    workers: int = -1  # decoding processes while building the log-mel cache; -1 = one per core, 0 = none
    mel: dict = field(default_factory=lambda: MelConfig().to_dict())
    crop_frames: int = 96  # ~0.95 s at a 10 ms hop

    # --- model and loss
    encoder: str = "audiontt"
    encoder_kwargs: dict = field(default_factory=dict)
    projector: list = field(default_factory=lambda: [8192, 1048])  # hidden..., output
    # A HEAR checkpoint (e.g. an earlier export) whose encoder weights and
    # normalisation start the run; the projector starts fresh. "" = random init.
    init_from: str = ""
    # Steps during which the encoder's learning rate is 0 and only the fresh
    # projector learns; then the encoder warms up over warmup_epochs' steps.
    # For init_from continuations: a random projector's first gradients would
    # otherwise rewrite the pretrained features (the "linear probe, then
    # fine-tune" order). 0 = train everything from step 0.
    freeze_encoder_steps: int = 0
    lambd: float = 0.005

    # --- optimisation
    batch_size: int = 128  # global: split over processes under DDP
    epochs: float = 100.0
    steps: int = 0  # > 0 overrides epochs
    optimizer: str = "auto"  # lars | adamw | auto (adamw for vit* encoders, else lars)
    lr_weights: float = 0.4
    lr_biases: float = 0.0048
    # none: LARS uses lr_weights / lr_biases as given; linear: times
    # batch_size / 256 (Barlow Twins' rule, so a larger batch keeps its step size)
    lr_scaling: str = "none"
    weight_decay: float = 1e-5
    lars_eta: float = 0.001
    momentum: float = 0.9
    adamw_lr: float = 1e-4  # multiplied by batch_size / 128
    adamw_weight_decay: float = 0.06
    warmup_epochs: float = 1.0
    final_lr_factor: float = 0.001  # cosine ends at this fraction of the peak

    # --- augmentations (BYOL-A v2)
    mixup_ratio: float = 0.2
    mixup_bank: int = 2048
    rrc_virtual_crop: list = field(default_factory=lambda: [1.0, 1.5])  # (freq, time)
    rrc_freq_scale: list = field(default_factory=lambda: [0.6, 1.5])
    rrc_time_scale: list = field(default_factory=lambda: [0.6, 1.5])
    fader_gain: float = 1.0

    # --- execution
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on CUDA when supported) | bf16 | off
    channels_last: bool = False
    compile: bool = False

    # --- logging and checkpoints
    log_every: int = 10
    plot_every: int = 500
    ckpt_every: int = 1000
    max_bad_steps: int = 10  # stop after this many non-finite losses in a row

    # --- online quality probe (hear_abt/train/probe.py; docs/training_probe.md)
    probe_tasks: list = field(default_factory=list)  # HEAR-format task folders; [] = no probe
    probe_every: int = 0  # probe every N steps (and at step 0 and the end); 0 = at step 0 and the end only

    def __post_init__(self) -> None:
        MelConfig.from_dict(self.mel)  # validates keys
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; registered encoders: {', '.join(sorted(ENCODERS))}")
        if isinstance(self.probe_tasks, str):  # --set probe_tasks=DIR1,DIR2
            self.probe_tasks = [t for t in self.probe_tasks.split(",") if t]
        if not all(isinstance(t, str) and t for t in self.probe_tasks):
            raise ValueError(f"probe_tasks must be a list of task folders, got {self.probe_tasks!r}")
        if self.probe_every < 0:
            raise ValueError(f"probe_every must be >= 0, got {self.probe_every}")
        if self.freeze_encoder_steps < 0:
            raise ValueError(f"freeze_encoder_steps must be >= 0, got {self.freeze_encoder_steps}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (Barlow Twins normalises over the batch)")
        if self.optimizer not in ("auto", "lars", "adamw"):
            raise ValueError(f"optimizer must be auto, lars or adamw, got {self.optimizer!r}")
        if self.lr_scaling not in LR_SCALINGS:
            raise ValueError(f"lr_scaling must be one of {', '.join(LR_SCALINGS)}, got {self.lr_scaling!r}")
        if self.lr_scaling != "none" and self.resolved_optimizer != "lars":
            raise ValueError(f"lr_scaling={self.lr_scaling} applies to LARS; AdamW's rate is already adamw_lr x batch_size / 128")
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"amp must be auto, bf16 or off, got {self.amp!r}")
        if not 0 <= self.mixup_ratio < 1:
            raise ValueError(f"mixup_ratio must be in [0, 1), got {self.mixup_ratio}")
        if len(self.projector) < 1:
            raise ValueError("projector needs at least the output size, e.g. [8192, 1048]")

    @property
    def mel_config(self) -> MelConfig:
        return MelConfig.from_dict(self.mel)

    @property
    def lr_scale(self) -> float:
        """The factor lr_weights and lr_biases are multiplied by (LARS)."""
        return self.batch_size / LR_REFERENCE_BATCH if self.lr_scaling == "linear" else 1.0

    @property
    def resolved_optimizer(self) -> str:
        if self.optimizer != "auto":
            return self.optimizer
        return "adamw" if self.encoder.startswith("vit") else "lars"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        reject_unknown(cls, d, "config keys")
        return cls(**d)

    def replace(self, overrides: Mapping[str, Any]) -> TrainConfig:
        d = self.to_dict()
        for key, value in overrides.items():
            head, _, rest = key.partition(".")
            if head not in d:
                raise ValueError(f"unknown config key {key!r}; known keys: {sorted(d)}")
            if rest:  # dotted key into a dict field, e.g. encoder_kwargs.dropout=0
                if not isinstance(d[head], dict):
                    raise ValueError(f"{head!r} is not a dict; set it as {head}=VALUE")
                d[head] = {**d[head], rest: value}
            else:
                d[head] = _coerce(head, value, d[head])
        return TrainConfig.from_dict(d)


def _coerce(name: str, value: Any, current: Any) -> Any:
    """Make a parsed override fit the field's type (1 -> 1.0 for floats); refuse
    values of the wrong kind with the key in the message."""
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} takes true/false, got {value!r}")
        return value
    if isinstance(current, float) and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # YAML 1.1 reads 1e-5 as a string
            return float(value)
        except ValueError:
            raise ValueError(f"{name} takes a number, got {value!r}") from None
    if isinstance(current, str) and not isinstance(value, str):
        return str(value)
    if isinstance(current, list) and isinstance(value, str) and name == "probe_tasks":
        return value  # a comma-separated list of folders; TrainConfig splits it
    if current is not None and not isinstance(value, type(current)):
        raise ValueError(f"{name} takes a {type(current).__name__}, got {value!r}")
    return value


def parse_value(text: str) -> Any:
    """Parse a command-line value as JSON (1e-5, true, [1, 2], {"a": 1}), else
    as YAML when installed ({a: 1}), else keep the raw string."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml

        return yaml.safe_load(text)
    except Exception:  # no pyyaml, or not YAML either
        return text


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or JSON config file into a dict of overrides."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{path}: reading YAML needs pyyaml (pip install pyyaml) or use a .json config") from None
        d = yaml.safe_load(text) or {}
    else:
        d = json.loads(text)
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of keys to values")
    return d
