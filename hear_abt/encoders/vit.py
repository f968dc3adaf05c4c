"""ViT-C: a Vision Transformer with a convolutional stem (Xiao et al. 2021,
"Early convolutions help transformers see better"), on 16 mel x 8 frame patches.

The stem replaces the 16x8 patchify conv by four 3x3 conv-BN-ReLU layers
(strides 2, 2, 2 in mel and time, then 2 in mel only; channels D/8, D/4, D/2,
D) and a 1x1 conv to D. A 64 x 96 crop becomes 4 x 12 tokens, which get fixed
2-D sine-cosine position embeddings and pass through pre-norm Transformer
blocks (MLP ratio 4, GELU, LayerNorm eps 1e-6). Sizes: Tiny 192-d/12 blocks/
3 heads, Small 384/12/6, Base 768/12/12.

Frames: token column j covers mel frames 8j .. 8j+7 (80 ms); its frame
feature is the mean of its 4 mel tokens (D-d). The paper's wrapper used the
[CLS] token of each 96-frame piece instead; a per-column feature gives the
one-pass timestamp pooling every other encoder uses, so there is no [CLS].

Long inputs: the input is cut into 96-frame segments (the pretraining crop
length, 12 token columns), aligned to the start, and each segment is encoded
on its own (a shorter last segment uses the first columns of the position
table). We chunk rather than interpolate the position embeddings because
(1) interpolation would stretch the 12 positions the model was trained on
over minutes of audio, so every token would see position codes and an
attention span it never saw in training, and (2) attention over a whole
120 s clip costs O(tokens^2) (6000 tokens), segments cost O(tokens). Each
output frame therefore sees the 96 frames of its own segment: chunked
encoding of a long clip equals one pass when chunks start at multiples of
96 mel frames (``chunk_align``) with no extra context.
"""
from __future__ import annotations

import torch
from torch import nn

SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}


def sincos_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """[rows * cols, dim] fixed position codes: half the channels encode the
    row, half the column, each as sin/cos at geometric frequencies (MAE style)."""
    if dim % 4:
        raise ValueError(f"embedding dim must be a multiple of 4, got {dim}")
    q = dim // 4
    freq = 1.0 / 10000 ** (torch.arange(q, dtype=torch.float64) / q)

    def enc(pos: torch.Tensor) -> torch.Tensor:
        a = pos[:, None] * freq[None]
        return torch.cat([a.sin(), a.cos()], dim=1)

    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64), indexing="ij")
    return torch.cat([enc(r.flatten()), enc(c.flatten())], dim=1).float()


class ViTC(nn.Module):
    frame_stride = 8  # mel frames per token column (80 ms)
    segment = 96  # mel frames per independently encoded segment (pretraining crop)
    receptive_field = 96  # an output frame sees its whole segment, nothing beyond
    chunk_context = 0  # segments never look past their edges...
    chunk_align = 96  # ...so chunks only need to start on the segment grid

    def __init__(self, size: str = "tiny", n_mels: int = 64, depth: int | None = None, dropout: float = 0.0):
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
        if n_mels % 16:
            raise ValueError(f"n_mels must be a multiple of 16, got {n_mels}")
        dim, default_depth, heads = SIZES[size]
        self.size, self.output_dim, self.rows = size, dim, n_mels // 16
        stem: list[nn.Module] = []
        c_in, c = 1, dim // 8
        for stride in ((2, 2), (2, 2), (2, 2), (2, 1)):  # (mel, time): 16 x 8 overall
            stem += [nn.Conv2d(c_in, c, 3, stride, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in, c = c, min(2 * c, dim)
        stem.append(nn.Conv2d(c_in, dim, 1))
        self.stem = nn.Sequential(*stem)
        cols = self.segment // self.frame_stride
        # [rows, cols, D]; not saved in checkpoints (a function of the shape).
        self.register_buffer("pos", sincos_2d(dim, self.rows, cols).view(self.rows, cols, dim), persistent=False)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=dropout, activation="gelu", layer_norm_eps=1e-6, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth or default_depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.MultiheadAttention):
            nn.init.xavier_uniform_(m.in_proj_weight)
            nn.init.zeros_(m.in_proj_bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def min_frames(self) -> int:
        return self.frame_stride

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, n_mels, t <= 96] -> [N, ceil(t / 8), D]."""
        tok = self.stem(x)  # [N, D, rows, cols]
        n, d, rows, cols = tok.shape
        tok = tok.permute(0, 2, 3, 1) + self.pos[:, :cols]  # [N, rows, cols, D]
        tok = self.norm(self.blocks(tok.reshape(n, rows * cols, d)))  # [N, rows * cols, D]
        return tok.view(n, rows, cols, d).mean(dim=1)  # [N, cols, D]

    def forward_frames(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, n_mels, T] -> [B, ceil(T / 8), D]: 96-frame segments encoded
        independently (full ones batched together), columns concatenated."""
        b, _, m, t = x.shape
        full = t // self.segment
        out = []
        if full:
            seg = x[..., : full * self.segment].reshape(b, 1, m, full, self.segment).permute(0, 3, 1, 2, 4)
            f = self._encode(seg.reshape(b * full, 1, m, self.segment))  # [B * full, 12, D]
            out.append(f.reshape(b, full * f.shape[1], -1))
        if t > full * self.segment:
            out.append(self._encode(x[..., full * self.segment :]))
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, n_mels, T] -> [B, D]: temporal mean + max of the frames."""
        f = self.forward_frames(x)
        return f.mean(dim=1) + f.amax(dim=1)


class ViTCTiny(ViTC):
    """ViT-C Tiny: 192-d tokens, 12 blocks, 3 heads; 80 ms frames."""

    def __init__(self, n_mels: int = 64, depth: int | None = None, dropout: float = 0.0):
        super().__init__("tiny", n_mels, depth, dropout)


class ViTCSmall(ViTC):
    """ViT-C Small: 384-d tokens, 12 blocks, 6 heads; 80 ms frames."""

    def __init__(self, n_mels: int = 64, depth: int | None = None, dropout: float = 0.0):
        super().__init__("small", n_mels, depth, dropout)


class ViTCBase(ViTC):
    """ViT-C Base: 768-d tokens, 12 blocks, 12 heads; 80 ms frames."""

    def __init__(self, n_mels: int = 64, depth: int | None = None, dropout: float = 0.0):
        super().__init__("base", n_mels, depth, dropout)
