"""Small building blocks shared by the STRL and the denoiser."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention on (N, L, D) tokens (fused SDPA; exports to ONNX)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        qkv = (
            self.qkv(x).reshape(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        )
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, heads, L, D/heads)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class TransformerBlock(nn.Module):
    """Pre-LN encoder block: x += MHSA(LN(x)); x += FFN(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SeparableConvBlock(nn.Module):
    """3x3 depthwise + 1x1 pointwise conv, GroupNorm, [FiLM], SiLU (cheap at 1/4 on CPU).

    With ``film_dim`` > 0 the block takes a conditioning vector (the timestep embedding) and
    applies ``x * (1 + scale) + shift`` *after* the GroupNorm: FiLM before a norm is cancelled
    by it. The projection starts at zero, so an untrained FiLM is the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, film_dim: int = 0):
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm = nn.GroupNorm(min(8, out_channels), out_channels)
        self.act = nn.SiLU()
        self.film = None
        if film_dim > 0:
            self.film = nn.Linear(film_dim, 2 * out_channels)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_affine(x, *self.norm_affine(cond, len(x)))

    def forward_affine(self, x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor,
                       ) -> torch.Tensor:
        """:meth:`forward` given :meth:`norm_affine`'s gain and bias."""
        return self.finish_affine(self.pointwise(self.depthwise(x)), gain, bias)

    def norm_affine(self, cond: torch.Tensor | None, rows: int,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The norm's affine with the FiLM folded in, (rows, C, 1, 1) gain and bias:
        ``(n * w + b) * (1 + s) + h = n * (w (1 + s)) + (b (1 + s) + h)``. It depends on the
        timestep only, so a sampler computes it once per timestep, not once per step."""
        gain, bias = self.norm.weight[None], self.norm.bias[None]
        if self.film is not None and cond is not None:
            scale, shift = self.film(cond).chunk(2, dim=1)
            gain, bias = gain * (1 + scale), bias * (1 + scale) + shift
        else:
            gain, bias = gain.expand(rows, -1), bias.expand(rows, -1)
        return gain[:, :, None, None], bias[:, :, None, None]

    def finish_affine(self, x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor,
                      ) -> torch.Tensor:
        """Norm without its own affine, then ``gain``/``bias`` from :meth:`norm_affine` (rows
        of 1 broadcast), activation."""
        x = F.group_norm(x, self.norm.num_groups, eps=self.norm.eps)
        return self.act(x * gain + bias)


def sinusoidal_embedding(t: torch.Tensor, dim: int,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) sinusoidal features (Transformer / DDPM), in ``dtype``.

    Computed in float32 (t up to 1000 times frequencies needs it) and cast at the end, so a
    half-precision network gets half-precision features.
    """
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, device=t.device, dtype=torch.float32)
        * (-math.log(10000.0) / max(half - 1, 1))
    )
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).to(dtype)
