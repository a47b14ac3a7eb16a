"""Pose decoder f_theta(x_t, F_t, t) with Lookup-based MultiScale Feature Interaction (Sec. 3.3).

Split in two so the condition side runs once per window:
- ``ConditionPyramid``: STRL condition (N, C, h, w) -> F1 (h, w), F2 (2h, 2w), F3 (4h, 4w) by
  deconvolutions; F2 also gets the key frame's stride-8 backbone features (YOLO's P3), so the
  1/8 branch sees detail that the 1/16 STRL grid pooled away. Depends only on the window, so it
  is computed once and reused by every step and every hypothesis.
- ``LMSFIDenoiser``: one denoising step. Noisy heatmaps are rescaled by the timestep embedding
  (FiLM), downsampled to three scales, and at each scale only *look up* features: a one-channel
  spatial mask A = sigmoid(max_c(refined heatmap features)) gates F_j, and the gated and plain
  features are fused (Transformer at 1/16, convolutions at 1/8 and 1/4). The three scales are
  summed at 1/4 resolution and a separable 3x3 conv predicts x0 (K heatmaps). The timestep
  also conditions every block *inside* the network (FiLM after each GroupNorm, and added to the
  attention tokens): FiLM on the input alone is cancelled by the first GroupNorm.

The fusions of every scale are linear in [gated ; F] up to their norm, so F's half of each
(``LMSFIDenoiser.condition_terms``) depends only on the window: it is computed once with the
condition, not at every step (the same arithmetic, split; it saves a step about a tenth).

Shapes: N persons, B = rows of a step (persons x hypotheses), K keypoints, heatmaps (H, W) =
(4h, 4w).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffpose_ros.config import ModelConfig
from diffpose_ros.model.layers import SeparableConvBlock, TransformerBlock, sinusoidal_embedding

# the time terms are part of the exported graphs' contract, defined there (no torch import)
from diffpose_ros.runtime.ort_runtime import FILM_BLOCKS, TIME_TERM_NAMES


def _deconv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
        nn.GroupNorm(min(8, out_channels), out_channels),
        nn.SiLU(),
    )


class ConditionPyramid(nn.Module):
    """Condition (N, C, h, w) [+ key-frame fine features (N, c8, 2h, 2w)] ->
    (F1 (N, d1, h, w), F2 (N, d2, 2h, 2w), F3 (N, d3, 4h, 4w))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d1, d2, d3 = config.decoder_dims
        self.level1 = nn.Sequential(nn.Conv2d(config.cond_channels, d1, 1), nn.SiLU())
        self.level2 = _deconv(config.cond_channels, d2)
        self.fine = None
        if config.fine_feature_channels > 0:
            self.fine = nn.Sequential(
                nn.Conv2d(config.fine_feature_channels, d2, 1, bias=False),
                nn.GroupNorm(min(8, d2), d2), nn.SiLU())
        self.level3 = _deconv(d2, d3)

    def forward(self, cond: torch.Tensor, fine: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f2 = self.level2(cond)
        if self.fine is not None and fine is not None:
            f2 = f2 + self.fine(fine)
        return self.level1(cond), f2, self.level3(f2)


def _fusion_condition_term(block: SeparableConvBlock, features: torch.Tensor) -> torch.Tensor:
    """F's half of ``block(cat([gated, F]))`` before its norm: the depthwise conv is per
    channel and the pointwise conv a sum over channels, so the two halves add."""
    d = features.shape[1]
    y = F.conv2d(features, block.depthwise.weight[d:], padding=1, groups=d)
    return F.conv2d(y, block.pointwise.weight[:, d:])


def _fuse(block: SeparableConvBlock, gated: torch.Tensor, condition_term: torch.Tensor,
          gain: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``block(cat([gated, F]), cond)`` given F's precomputed half and the block's
    timestep affine."""
    d = gated.shape[1]
    y = F.conv2d(gated, block.depthwise.weight[:d], padding=1, groups=d)
    return block.finish_affine(F.conv2d(y, block.pointwise.weight[:, :d]) + condition_term,
                               gain, bias)


def linear_resize_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) matrix of 1-D linear interpolation as ``F.interpolate`` does it
    (align_corners=False): bilinear resizing is separable, ``A_h @ x @ A_w.T``."""
    basis = torch.eye(size_in, dtype=torch.float64)[None]
    return F.interpolate(basis, size=size_out, mode='linear', align_corners=False)[0].T.float()


def _strided_size(size: int) -> int:
    """Output size of the 3x3, stride-2, padding-1 convolutions of ``down2`` and ``down1``."""
    return (size - 1) // 2 + 1


def _spatial_mask(heatmap_features: torch.Tensor) -> torch.Tensor:
    """Sq + Sigmoid: max over channels -> (B, 1, h, w) mask in (0, 1)."""
    return torch.sigmoid(heatmap_features.amax(dim=1, keepdim=True))


class LMSFIDenoiser(nn.Module):
    """One step: (x_t in [0, 1], t, per-row condition pyramid) -> predicted x0 heatmaps.

    Everything computed from t alone (:meth:`time_terms`) is split from the step proper
    (:meth:`forward_timed`): a sampler visits few distinct timesteps, so the runtime computes
    their terms once and a step skips the time MLP and the per-block FiLM projections (a third
    of a step's ONNX nodes).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        k = config.num_keypoints
        d1, d2, d3 = config.decoder_dims
        e = config.time_embed_dim
        self.time_embed_dim = e
        self.time_mlp = nn.Sequential(nn.Linear(e, 4 * e), nn.GELU(), nn.Linear(4 * e, 4 * e))
        self.time_film = nn.Sequential(nn.SiLU(), nn.Linear(4 * e, 2 * k))
        # inside the network: every block's FiLM after its norm, and the attention tokens
        film = 4 * e if config.time_in_blocks else 0
        self.time_act = nn.SiLU()
        # noisy heatmap pyramid x̄3 (1/4), x̄2 (1/8), x̄1 (1/16)
        self.down3 = SeparableConvBlock(k, d3, film_dim=film)
        self.down2 = SeparableConvBlock(d3, d2, stride=2, film_dim=film)
        self.down1 = SeparableConvBlock(d2, d1, stride=2, film_dim=film)
        # scale 1: SeRef (token self-attention refinement) and Trans over [F̄1 ; F1]
        self.seref = TransformerBlock(d1, config.decoder_heads)
        self.trans_in = nn.Linear(2 * d1, d1)
        self.trans = TransformerBlock(d1, config.decoder_heads)
        self.time_tokens = nn.Linear(4 * e, 2 * d1) if film else None
        self.out1 = nn.Conv2d(d1, d3, 1)
        # scales 2 and 3: convolutional refinement and fusion
        self.refine2 = SeparableConvBlock(d2, d2, film_dim=film)
        self.fuse2 = SeparableConvBlock(2 * d2, d2, film_dim=film)
        self.out2 = nn.Conv2d(d2, d3, 1)
        self.refine3 = SeparableConvBlock(d3, d3, film_dim=film)
        self.fuse3 = SeparableConvBlock(2 * d3, d3, film_dim=film)
        # 3x3 depthwise + 1x1 head: a full 3x3 conv here was the largest single op of a step
        self.head = nn.Sequential(nn.Conv2d(d3, d3, 3, padding=1, groups=d3), nn.Conv2d(d3, k, 1))
        nn.init.zeros_(self.time_film[1].weight)
        nn.init.zeros_(self.time_film[1].bias)
        # the bilinear upsampling of scales 1 and 2 to heatmap size as two small matrix
        # products: the same numbers as F.interpolate, and a third of its time in ONNX Runtime
        hm_h, hm_w = config.heatmap_height, config.heatmap_width
        h2, w2 = _strided_size(hm_h), _strided_size(hm_w)
        h1, w1 = _strided_size(h2), _strided_size(w2)
        for name, size_in, size_out in (('resize1_h', h1, hm_h), ('resize1_w', w1, hm_w),
                                        ('resize2_h', h2, hm_h), ('resize2_w', w2, hm_w)):
            matrix = linear_resize_matrix(size_in, size_out)
            if name.endswith('_w'):
                matrix = matrix.T.contiguous()
            self.register_buffer(name, matrix, persistent=False)

    @staticmethod
    def _tokens(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)

    def condition_terms(self, f1: torch.Tensor, f2: torch.Tensor, f3: torch.Tensor,
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """F's halves of the three fusions, once per window: c1 (N, h*w, d1) tokens with
        ``trans_in``'s bias, c2 (N, d2, 2h, 2w), c3 (N, d3, 4h, 4w)."""
        d1 = f1.shape[1]
        c1 = F.linear(self._tokens(f1), self.trans_in.weight[:, d1:], self.trans_in.bias)
        return (c1, _fusion_condition_term(self.fuse2, f2),
                _fusion_condition_term(self.fuse3, f3))

    def time_terms(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B,) int64 timesteps -> the step's t-only terms, named by ``TIME_TERM_NAMES``:
        input FiLM gain and bias (B, K, 1, 1), each FiLM block's norm affine with the FiLM
        folded in (B, C, 1, 1), and the offsets added to the two Transformers' tokens
        (B, 1, d1)."""
        dtype = self.time_mlp[0].weight.dtype  # half precision when the network is fp16
        temb = self.time_mlp(sinusoidal_embedding(t, self.time_embed_dim, dtype))
        scale, shift = self.time_film(temb).chunk(2, dim=1)
        terms = [(1 + scale)[:, :, None, None], shift[:, :, None, None]]
        cond = self.time_act(temb) if self.time_tokens is not None else None
        for name in FILM_BLOCKS:
            terms += getattr(self, name).norm_affine(cond, len(t))
        if self.time_tokens is not None:
            terms += [v[:, None, :] for v in self.time_tokens(cond).chunk(2, dim=1)]
        else:
            zeros = temb.new_zeros(len(t), 1, self.seref.norm1.normalized_shape[0])
            terms += [zeros, zeros]
        return tuple(terms)

    def forward(self, model_input: torch.Tensor, t: torch.Tensor, person_index: torch.Tensor,
                *condition: torch.Tensor) -> torch.Tensor:
        """model_input (B, K, H, W) in [0, 1]; t (B,) int64; person_index (B,) int64 row -> person;
        ``condition``: f1/f2/f3 (N, d, ...) from ConditionPyramid and c1/c2/c3 from
        :meth:`condition_terms`. Returns x0 heatmaps (B, K, H, W)."""
        rows = tuple(c[person_index] for c in condition)
        return self.forward_timed(model_input, *rows, *self.time_terms(t))

    def forward_timed(self, model_input: torch.Tensor,
                      f1: torch.Tensor, f2: torch.Tensor, f3: torch.Tensor,
                      c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor,
                      *time_terms: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` given each row's condition (B, ...; a sampler selects them once per
        call, not once per step) and :meth:`time_terms` (rows: B, or 1 shared by all rows)."""
        terms = dict(zip(TIME_TERM_NAMES, time_terms, strict=True))

        def affine(block: str) -> tuple[torch.Tensor, torch.Tensor]:
            return terms[f'{block}_gain'], terms[f'{block}_bias']

        x = model_input * terms['input_gain'] + terms['input_bias']
        x3 = self.down3.forward_affine(x, *affine('down3'))
        x2 = self.down2.forward_affine(x3, *affine('down2'))
        x1 = self.down1.forward_affine(x2, *affine('down1'))
        b, d1, h, w = x1.shape
        # scale 1 (Transformer); the timestep is added to the tokens of both blocks
        tokens1 = self._tokens(x1)
        refined1 = self.seref(tokens1 + terms['tokens_seref']).transpose(1, 2).reshape(
            b, d1, h, w)
        gated1 = _spatial_mask(refined1) * f1
        # trans_in([gated1 ; f1]) with f1's half (and the bias) precomputed in c1
        z1 = F.linear(self._tokens(gated1), self.trans_in.weight[:, :d1]) + c1
        z1 = self.out1(self.trans(z1 + terms['tokens_trans']).transpose(1, 2).reshape(
            b, d1, h, w))
        # scale 2 (convolutional)
        gated2 = _spatial_mask(self.refine2.forward_affine(x2, *affine('refine2'))) * f2
        z2 = self.out2(_fuse(self.fuse2, gated2, c2, *affine('fuse2')))
        # scale 3 (convolutional, heatmap resolution)
        gated3 = _spatial_mask(self.refine3.forward_affine(x3, *affine('refine3'))) * f3
        z3 = _fuse(self.fuse3, gated3, c3, *affine('fuse3'))
        fused = (z3 + self._upsample(z2, self.resize2_h, self.resize2_w)
                 + self._upsample(z1, self.resize1_h, self.resize1_w))
        return self.head(fused)

    @staticmethod
    def _upsample(x: torch.Tensor, rows: torch.Tensor, cols_t: torch.Tensor) -> torch.Tensor:
        """Bilinear resize (align_corners=False) of (B, C, h, w) by its separable matrices."""
        return torch.matmul(rows, torch.matmul(x, cols_t))
