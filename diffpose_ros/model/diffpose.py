"""The DiffPose network: backbone -> STRL -> condition pyramid -> LMSFI denoiser.

Inference is split into three calls so that work is never repeated (and each is one exported
ONNX graph, see ``diffpose_ros.runtime.export``):
  1. ``extract_features``: once per person per frame (cached in the track's ring buffer);
  2. ``encode_window``: once per window (STRL + condition pyramid);
  3. ``denoise``: once per denoising step, all persons x hypotheses batched (exported as
     ``time_terms``, once per distinct timestep, and ``denoise_timed``, the step proper).
The DDIM loop lives outside the network (``diffpose_ros.sampler``), so steps and hypotheses are
run-time choices and one loop drives both PyTorch and ONNX Runtime.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffpose_ros.config import ModelConfig
from diffpose_ros.model.backbone import ViTPoseBackbone, YoloPoseBackbone
from diffpose_ros.model.denoiser import ConditionPyramid, LMSFIDenoiser
from diffpose_ros.model.strl import SpatioTemporalRepresentationLearner


def build_backbone(config: ModelConfig, load_weights: bool = True) -> nn.Module:
    if config.backbone == 'yolo11n-pose':
        backbone: nn.Module = YoloPoseBackbone(load_weights=load_weights)
    else:
        backbone = ViTPoseBackbone(crop_hw=(config.crop_height, config.crop_width))
    if backbone.out_channels != config.backbone_channels:
        raise ValueError(
            f'{config.backbone} gives {backbone.out_channels} channels but '
            f'config.backbone_channels is {config.backbone_channels}'
        )
    return backbone


class WindowEncoder(nn.Module):
    """STRL + condition pyramid: (N, T, C, h, w), offsets (N, T) -> (F1, F2, F3).

    The key frame's stride-8 backbone features (stored space-to-depth in its first
    ``4 * fine_feature_channels`` channels) go to the pyramid's 1/8 level.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.strl = SpatioTemporalRepresentationLearner(config)
        self.pyramid = ConditionPyramid(config)
        self.fine_channels = 4 * config.fine_feature_channels

    def forward(self, features: torch.Tensor, offsets: torch.Tensor):
        cond, key_features = self.strl(features, offsets)
        fine = None
        if self.fine_channels:
            fine = F.pixel_shuffle(key_features[:, : self.fine_channels], 2)
        return self.pyramid(cond, fine)


class DiffPoseNet(nn.Module):
    """Backbone (frozen by default) + trainable head (window encoder and denoiser)."""

    def __init__(self, config: ModelConfig, backbone: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.backbone = backbone if backbone is not None else build_backbone(config)
        self.window_encoder = WindowEncoder(config)
        self.denoiser = LMSFIDenoiser(config)

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights this project trains (never the third-party backbone's)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith('backbone.')}

    def extract_features(self, crops: torch.Tensor) -> torch.Tensor:
        """crops (N, 3, Hc, Wc) RGB in [0, 1] -> (N, C, h, w)."""
        return self.backbone(crops)

    def encode_window(self, features: torch.Tensor, offsets: torch.Tensor,
                      ) -> tuple[torch.Tensor, ...]:
        """The window's condition, reused by every step: (f1, f2, f3) of the pyramid and the
        denoiser's step-independent fusion terms (c1, c2, c3)."""
        f1, f2, f3 = self.window_encoder(features, offsets)
        return (f1, f2, f3, *self.denoiser.condition_terms(f1, f2, f3))

    def denoise(self, model_input: torch.Tensor, t: torch.Tensor, person_index: torch.Tensor,
                *condition: torch.Tensor) -> torch.Tensor:
        """One step; ``condition`` is :meth:`encode_window`'s 6 tensors."""
        return self.denoiser(model_input, t, person_index, *condition)

    def time_terms(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The t-only part of a step (``LMSFIDenoiser.time_terms``): once per timestep."""
        return self.denoiser.time_terms(t)

    def denoise_timed(self, model_input: torch.Tensor,
                      *condition_rows_and_time_terms: torch.Tensor) -> torch.Tensor:
        """:meth:`denoise` given each row's condition (the 6 tensors indexed by
        ``person_index``), then the 18 time terms (the exported denoiser graph)."""
        return self.denoiser.forward_timed(model_input, *condition_rows_and_time_terms)
