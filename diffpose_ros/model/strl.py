"""SpatioTemporal Representation Learner (paper Sec. 3.2).

Per-frame backbone features of a window -> one condition feature map for the key frame,
computed once per window and reused by every denoising step and hypothesis.

Shapes: N persons, T frames, C backbone channels, (h, w) = 16x12 feature grid, D = strl_dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffpose_ros.config import ModelConfig
from diffpose_ros.model.layers import TransformerBlock


class SpatioTemporalRepresentationLearner(nn.Module):
    """Joint space-time attention over the window's frame tokens.

    1. patch embedding: per token, C -> D (tokens pooled ``strl_token_pool`` x per side);
    2. learnable spatial position embedding + per-frame embedding indexed by the frame's offset
       from the key frame (-max_window_offset..+max_window_offset), so one set of weights serves
       causal (offsets -2, -1, 0) and centred (-2..2) windows of any length. Offsets are per
       person and come from image stamps in nominal frame periods, so a window whose frames were
       dropped under load says so (e.g. -3, -1, 0) instead of pretending to be contiguous;
    3. ``strl_depth`` pre-LN Transformer blocks over all T*h'*w' tokens (not factorised);
    4. fusion to the key frame: per spatial location, attention pooling over the T frames with
       the key frame's token as query, then an MLP on [key token, pooled] -> cond_channels;
       upsampled back to (h, w) and added to a projection of the key frame's own features.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        dim = config.strl_dim
        self.pool = config.strl_token_pool
        self.max_offset = config.max_window_offset
        tokens_h = config.feature_height // self.pool
        tokens_w = config.feature_width // self.pool
        self.patch_embed = nn.Linear(config.backbone_channels, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1, tokens_h * tokens_w, dim))
        self.frame_embed = nn.Embedding(2 * self.max_offset + 1, dim)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, config.strl_heads, config.strl_mlp_ratio)
            for _ in range(config.strl_depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.pool_query = nn.Linear(dim, dim)
        self.pool_key = nn.Linear(dim, dim)
        self.fuse_mlp = nn.Sequential(
            nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, config.cond_channels)
        )
        self.key_skip = nn.Conv2d(config.backbone_channels, config.cond_channels, 1)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.frame_embed.weight, std=0.02)

    def forward(self, features: torch.Tensor, offsets: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """features (N, T, C, h, w); offsets (N, T) (or (T,) for all) int64, frames from the key
        frame in nominal frame periods (from stamps), with exactly one 0 per row (the key frame).

        Returns the condition (N, cond_channels, h, w) and the key frame's features (N, C, h, w).
        """
        n, t, c, h, w = features.shape
        if offsets.dim() == 1:  # one set of offsets for every person
            offsets = offsets.unsqueeze(0).expand(n, t)
        key_mask = (offsets == 0).to(features.dtype)  # (N, T)
        key_features = (features * key_mask.view(n, t, 1, 1, 1)).sum(1)  # (N, C, h, w)
        pooled = F.avg_pool2d(features.reshape(n * t, c, h, w), self.pool)  # (N*T, C, h', w')
        hp, wp = pooled.shape[-2:]
        tokens = self.patch_embed(pooled.flatten(2).transpose(1, 2))  # (N*T, h'w', D)
        dim = tokens.shape[-1]
        frame_index = offsets.clamp(-self.max_offset, self.max_offset) + self.max_offset
        tokens = (
            tokens.reshape(n, t, hp * wp, dim)
            + self.pos_embed
            + self.frame_embed(frame_index).view(n, t, 1, dim)
        )
        x = tokens.reshape(n, t * hp * wp, dim)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x).reshape(n, t, hp * wp, dim)
        key_tokens = (x * key_mask.view(n, t, 1, 1)).sum(1)  # (N, h'w', D)
        scores = (self.pool_key(x) * self.pool_query(key_tokens).unsqueeze(1)).sum(-1)
        weights = torch.softmax(scores / dim**0.5, dim=1)  # (N, T, h'w')
        pooled_tokens = (weights.unsqueeze(-1) * x).sum(1)  # (N, h'w', D)
        fused = self.fuse_mlp(torch.cat([key_tokens, pooled_tokens], dim=-1))
        fused = fused.transpose(1, 2).reshape(n, -1, hp, wp)
        if self.pool > 1:
            fused = F.interpolate(fused, size=(h, w), mode='bilinear', align_corners=False)
        return fused + self.key_skip(key_features), key_features
