"""Per-frame backbones: crop (N, 3, 256, 192) RGB in [0, 1] -> features (N, C, 16, 12).

- ``YoloPoseBackbone`` (default): backbone + neck (layers 0-22) of the COCO-pose-trained
  YOLO11n-pose checkpoint, frozen. Its three neck outputs (1/8, 1/16, 1/32) are merged at 1/16:
  P3 space-to-depth (4 x 64, so its stride-8 detail is kept) + 128 + 256 = 640 channels. The
  checkpoint is an ultralytics pickle: it is unpickled once, only after its sha256 matches, and
  converted to safetensors; later loads never unpickle.
- ``ViTPoseBackbone``: a ViTPose-B-style plain ViT (patch 16, 768 wide, 12 blocks) that loads
  ViTPose/mmpose state_dict keys, for users who bring ViTPose weights (the paper's setting).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from diffpose_ros.assets import YOLO11N_POSE, AssetError, asset_path, cache_dir

YOLO_NECK_LAST_LAYER = 22  # layer 23 is the Pose head, not used
YOLO_NECK_OUTPUTS = (16, 19, 22)  # P3 (1/8, 64 ch), P4 (1/16, 128 ch), P5 (1/32, 256 ch)
YOLO_BACKBONE_FILE = 'yolo11n-pose-backbone.safetensors'
YOLO_FINE_CHANNELS = 64  # P3 (stride 8), stored space-to-depth as 4 * 64 channels at 1/16
YOLO_BACKBONE_CHANNELS = 4 * YOLO_FINE_CHANNELS + 128 + 256


def _build_yolo_layers() -> nn.ModuleList:
    from diffpose_ros.ultralytics_env import configure_ultralytics_env

    configure_ultralytics_env()
    from ultralytics.nn.tasks import PoseModel

    model = PoseModel('yolo11n-pose.yaml', nc=1, verbose=False)  # architecture only, offline
    return nn.ModuleList(list(model.model)[: YOLO_NECK_LAST_LAYER + 1])


def convert_yolo_checkpoint(pt_path: Path | None = None, out_path: Path | None = None) -> Path:
    """Convert the verified YOLO11n-pose ``.pt`` into a safetensors file of layers 0-22."""
    from safetensors.torch import save_file

    pt_path = Path(pt_path) if pt_path else asset_path(YOLO11N_POSE)  # sha256-verified
    digest = hashlib.sha256(pt_path.read_bytes()).hexdigest()
    if digest != YOLO11N_POSE.sha256:
        raise AssetError(
            f'{pt_path}: sha256 {digest[:12]}... is not the known yolo11n-pose.pt; '
            'refusing to unpickle it'
        )
    from diffpose_ros.ultralytics_env import configure_ultralytics_env

    configure_ultralytics_env()
    import ultralytics  # noqa: F401  (the pickle references ultralytics classes)

    # The hash matched the official checkpoint, so unpickling executes only known code.
    checkpoint = torch.load(pt_path, map_location='cpu', weights_only=False)
    state = (checkpoint.get('ema') or checkpoint['model']).float().state_dict()
    keep = {}
    for key, value in state.items():
        layer = int(key.split('.')[1])
        if layer <= YOLO_NECK_LAST_LAYER:
            keep[key.removeprefix('model.')] = value.contiguous()
    out_path = Path(out_path) if out_path else cache_dir() / YOLO_BACKBONE_FILE
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(keep, str(out_path), metadata={'source_sha256': digest})
    return out_path


class YoloPoseBackbone(nn.Module):
    """Frozen YOLO11n-pose backbone + neck; outputs (N, 640, H/16, W/16)."""

    out_channels = YOLO_BACKBONE_CHANNELS

    def __init__(self, weights_path: str | Path | None = None, load_weights: bool = True):
        super().__init__()
        self.layers = _build_yolo_layers()
        self._routes = [layer.f for layer in self.layers]
        if load_weights:
            self.load_converted(weights_path)
        self.fuse_conv_bn()
        self.requires_grad_(False)
        self.eval()

    def load_converted(self, weights_path: str | Path | None) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(weights_path) if weights_path else cache_dir() / YOLO_BACKBONE_FILE
        if not path.is_file() and weights_path is None:
            convert_yolo_checkpoint(out_path=path)  # first use after setup fetched the .pt
        try:
            state = load_file(str(path))
        except (OSError, SafetensorError) as exc:
            raise AssetError(
                f'cannot load backbone weights {path}: {exc}. Delete it and run scripts/setup.sh'
            ) from exc
        missing, unexpected = self.layers.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise AssetError(
                f'{path} does not fit the YOLO11n-pose backbone '
                f'(missing {missing[:3]}, unexpected {unexpected[:3]})'
            )

    def fuse_conv_bn(self) -> None:
        """Fold BatchNorm into convolutions (frozen backbone: same output, faster)."""
        from ultralytics.nn.modules import Conv
        from ultralytics.utils.torch_utils import fuse_conv_and_bn

        for module in self.layers.modules():
            if isinstance(module, Conv) and hasattr(module, 'bn'):
                module.conv = fuse_conv_and_bn(module.conv, module.bn)
                delattr(module, 'bn')
                module.forward = module.forward_fuse

    def train(self, mode: bool = True) -> YoloPoseBackbone:
        return super().train(False)  # frozen: BatchNorm statistics never update

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        x = crops
        for layer, route in zip(self.layers, self._routes):
            if route != -1:
                x = (
                    outputs[route]
                    if isinstance(route, int)
                    else [x if j == -1 else outputs[j] for j in route]
                )
            x = layer(x)
            outputs.append(x)
        p3, p4, p5 = (outputs[i] for i in YOLO_NECK_OUTPUTS)
        # strides 8/16/32 -> all at 1/16 (fixed factors keep the ONNX graph free of shape ops);
        # P3 space-to-depth, not pooled: its stride-8 detail survives for the 1/8 branch
        return torch.cat([F.pixel_unshuffle(p3, 2), p4,
                          F.interpolate(p5, scale_factor=2.0, mode='nearest')], dim=1)


class _VitBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _VitAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(int(dim * mlp_ratio), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _VitAttention(nn.Module):
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
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, heads, L, dh)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class ViTPoseBackbone(nn.Module):
    """ViTPose-B-style ViT: (N, 3, 256, 192) -> (N, 768, 16, 12).

    Parameter names follow ViTPose / mmpose (``patch_embed.proj``, ``pos_embed``,
    ``blocks.{i}.attn.qkv``, ``last_norm``) so their checkpoints load with or without the
    ``backbone.`` prefix. ``pos_embed`` includes the class-token slot ViTPose keeps (unused).
    """

    IMAGENET_MEAN = (0.485, 0.456, 0.406)
    IMAGENET_STD = (0.229, 0.224, 0.225)

    def __init__(
        self,
        crop_hw: tuple[int, int] = (256, 192),
        dim: int = 768,
        depth: int = 12,
        heads: int = 12,
        patch: int = 16,
    ):
        super().__init__()
        self.out_channels = dim
        self.grid_hw = (crop_hw[0] // patch, crop_hw[1] // patch)
        self.patch_embed = nn.Module()
        # ViTPose pads by 2 so 256x192 gives exactly a 16x12 grid
        self.patch_embed.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch, padding=2)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_hw[0] * self.grid_hw[1] + 1, dim))
        self.blocks = nn.ModuleList(_VitBlock(dim, heads) for _ in range(depth))
        self.last_norm = nn.LayerNorm(dim, eps=1e-6)
        self.register_buffer('mean', torch.tensor(self.IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer('std', torch.tensor(self.IMAGENET_STD).view(1, 3, 1, 1), False)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def load_vitpose_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load a ViTPose(-B) checkpoint's backbone (keys with or without ``backbone.``)."""
        own = {}
        for key, value in state.items():
            if key.startswith('backbone.'):
                own[key.removeprefix('backbone.')] = value
            elif not key.startswith(('keypoint_head.', 'head.')):
                own[key] = value
        missing, unexpected = self.load_state_dict(own, strict=False)
        if missing or unexpected:
            raise ValueError(
                f'not a ViTPose-B backbone state_dict: missing {missing[:4]}, '
                f'unexpected {unexpected[:4]}'
            )

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj((crops - self.mean) / self.std)  # (N, D, h, w)
        n, dim, h, w = x.shape
        x = x.flatten(2).transpose(1, 2) + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        for block in self.blocks:
            x = block(x)
        return self.last_norm(x).transpose(1, 2).reshape(n, dim, h, w)


def ensure_converted_backbone() -> Path:
    """Convert the YOLO11n-pose checkpoint once (setup); later runs load safetensors only."""
    path = cache_dir() / YOLO_BACKBONE_FILE
    if not path.is_file():
        convert_yolo_checkpoint(out_path=path)
    return path


if __name__ == '__main__':
    print(f'[setup] backbone weights: {ensure_converted_backbone()}')
