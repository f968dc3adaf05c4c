"""BYOL-A v2's augmentations for ABT, batched on the device.

All three work on normalised log-mels [B, 1, F, T] (F mel bins, T frames).
Randomness comes only from the torch.Generator passed in, and is drawn in two
steps: `sample_params(n, generator)` draws every random number a batch of n
needs (on the CPU, independent of the device), `apply(x, params)` uses them.
The training loop draws the parameters of the *global* batch on every process
and each process applies its own slice, so 1 process and N processes augment
every sample identically (the DDP equivalence test relies on this).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Params = dict[str, torch.Tensor]


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def slice_params(params: dict, start: int, stop: int) -> dict:
    """The parameters of samples start..stop of a batch (nested dicts allowed)."""
    return {k: slice_params(v, start, stop) if isinstance(v, dict) else v[start:stop] for k, v in params.items()}


class BatchAugment(nn.Module):
    def sample_params(self, n: int, generator: torch.Generator) -> Params:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.sample_params(x.shape[0], generator))


class MixupBank(BatchAugment):
    """Log-mixup-exp with random past examples (BYOL-A's Mixup).

    y = log((1 - r) exp(x) + r exp(z)), r ~ U(0, ratio), z drawn uniformly
    from a FIFO memory bank of the last `capacity` inputs. The bank holds
    earlier batches only: call `push(batch)` once per step after augmenting
    (BYOL-A pushed sample by sample; per batch is the batched equivalent). An
    empty bank leaves x unchanged. The bank is part of the training state
    (`state()` / `load_state()`), so resuming is exact.
    """

    def __init__(self, ratio: float = 0.2, capacity: int = 2048):
        super().__init__()
        if not 0 <= ratio < 1:
            raise ValueError(f"ratio must be in [0, 1), got {ratio}")
        self.ratio, self.capacity = float(ratio), int(capacity)
        self.bank: torch.Tensor | None = None  # [capacity, 1, F, T], filled as a ring
        self.count = 0  # entries filled (<= capacity)
        self.ptr = 0  # next slot to overwrite

    def extra_repr(self) -> str:
        return f"ratio<={self.ratio}, capacity={self.capacity}, filled={self.count}"

    def sample_params(self, n: int, generator: torch.Generator) -> Params:
        return {"ratio": _uniform(n, 0.0, self.ratio, generator), "pick": torch.rand(n, generator=generator, dtype=torch.float64)}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        if self.count == 0 or self.ratio == 0:
            return x
        idx = (params["pick"] * self.count).long().clamp_(max=self.count - 1).to(self.bank.device)
        z = self.bank[idx].to(x.dtype)
        r = params["ratio"].to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
        # logaddexp form of log((1-r)e^x + r e^z): no overflow for large x, z.
        return torch.logaddexp(torch.log1p(-r) + x, torch.log(r) + z)

    @torch.no_grad()
    def push(self, x: torch.Tensor) -> None:
        """Append a batch [B, 1, F, T] in order, dropping the oldest entries."""
        if self.capacity == 0:
            return
        if self.bank is None or self.bank.shape[1:] != x.shape[1:] or self.bank.device != x.device:
            self.bank = x.new_zeros((self.capacity, *x.shape[1:]))
            self.count = self.ptr = 0
        x = x[-self.capacity :]
        idx = (self.ptr + torch.arange(x.shape[0], device=x.device)) % self.capacity
        self.bank[idx] = x.to(self.bank.dtype)
        self.ptr = (self.ptr + x.shape[0]) % self.capacity
        self.count = min(self.capacity, self.count + x.shape[0])

    def state(self) -> dict:
        bank = None if self.bank is None else self.bank[: self.count].detach().cpu().clone()
        return {"bank": bank, "count": self.count, "ptr": self.ptr, "capacity": self.capacity}

    def load_state(self, state: dict, device: torch.device | str = "cpu") -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"memory bank capacity {state['capacity']} != configured {self.capacity}")
        self.count, self.ptr = int(state["count"]), int(state["ptr"])
        if state["bank"] is None:
            self.bank = None
            return
        b = state["bank"].to(device)
        self.bank = b.new_zeros((self.capacity, *b.shape[1:]))
        self.bank[: self.count] = b


class RandomResizeCrop(BatchAugment):
    """BYOL-A's RandomResizeCrop: pick a random (freq x time) box on a virtual
    canvas `virtual_crop` times the input (input centred, zeros around it),
    with each side `freq_scale` / `time_scale` times the input's, and resize it
    back to the input size with bicubic interpolation.

    Batched with one affine grid_sample (each sample its own box); the box is
    continuous rather than rounded to whole bins, and zeros outside the input
    come from grid_sample's zero padding.
    """

    def __init__(
        self,
        virtual_crop: Sequence[float] = (1.0, 1.5),
        freq_scale: Sequence[float] = (0.6, 1.5),
        time_scale: Sequence[float] = (0.6, 1.5),
    ):
        super().__init__()
        self.virtual_crop = tuple(float(v) for v in virtual_crop)
        self.freq_scale = tuple(float(v) for v in freq_scale)
        self.time_scale = tuple(float(v) for v in time_scale)
        if min(self.virtual_crop) < 1 or min(self.freq_scale + self.time_scale) <= 0:
            raise ValueError("virtual_crop must be >= 1 and scales > 0")

    def extra_repr(self) -> str:
        return f"virtual_crop={self.virtual_crop}, freq_scale={self.freq_scale}, time_scale={self.time_scale}, bicubic"

    def sample_params(self, n: int, generator: torch.Generator) -> Params:
        """Box sizes as fractions of the input (h, w), clipped to the canvas, and
        box corners (top, left) in input fractions (negative: into the padding)."""
        vf, vt = self.virtual_crop
        h = _uniform(n, *self.freq_scale, generator).clamp(max=vf)
        w = _uniform(n, *self.time_scale, generator).clamp(max=vt)
        top = torch.rand(n, generator=generator, dtype=torch.float64) * (vf - h) - (vf - 1) / 2
        left = torch.rand(n, generator=generator, dtype=torch.float64) * (vt - w) - (vt - 1) / 2
        return {"h": h, "w": w, "top": top, "left": left}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        B = x.shape[0]
        h, w, top, left = (params[k].to(device=x.device, dtype=torch.float32) for k in ("h", "w", "top", "left"))
        theta = torch.zeros(B, 2, 3, device=x.device, dtype=torch.float32)
        # Output [-1, 1] (pixel edges, align_corners=False) -> the box's edges in input coords.
        theta[:, 0, 0] = w
        theta[:, 0, 2] = 2 * left + w - 1
        theta[:, 1, 1] = h
        theta[:, 1, 2] = 2 * top + h - 1
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x.float(), grid, mode="bicubic", padding_mode="zeros", align_corners=False)
        return out.to(x.dtype)


class RandomLinearFader(BatchAugment):
    """BYOL-A v2's fader: add a straight line over time, from a random gain at
    the first frame to another at the last, both ~ U(-gain, gain) (log-mel
    units, i.e. a fade in or out in dB-like steps)."""

    def __init__(self, gain: float = 1.0):
        super().__init__()
        self.gain = float(gain)

    def extra_repr(self) -> str:
        return f"gain={self.gain}"

    def sample_params(self, n: int, generator: torch.Generator) -> Params:
        return {"head": _uniform(n, -self.gain, self.gain, generator), "tail": _uniform(n, -self.gain, self.gain, generator)}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        T = x.shape[-1]
        head = params["head"].to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
        tail = params["tail"].to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
        t = torch.linspace(0, 1, T, device=x.device, dtype=x.dtype)
        return x + head + (tail - head) * t


class ABTAugment(nn.Module):
    """Mixup -> RandomResizeCrop -> RandomLinearFader, as BYOL-A v2 / ABT."""

    def __init__(self, mixup: MixupBank, crop: RandomResizeCrop, fader: RandomLinearFader):
        super().__init__()
        self.mixup, self.crop, self.fader = mixup, crop, fader

    def sample_params(self, n: int, generator: torch.Generator) -> dict:
        return {name: m.sample_params(n, generator) for name, m in (("mixup", self.mixup), ("crop", self.crop), ("fader", self.fader))}

    def apply(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        x = self.mixup.apply(x, params["mixup"])
        x = self.crop.apply(x, params["crop"])
        return self.fader.apply(x, params["fader"])

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.sample_params(x.shape[0], generator))
