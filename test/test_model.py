"""DiffPose network: shapes, config validation, weights I/O without pickle, ViT option."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffpose_ros.config import ModelConfig, PipelineConfig
from diffpose_ros.model.backbone import ViTPoseBackbone
from diffpose_ros.model.diffpose import DiffPoseNet
from diffpose_ros.model.weights import WeightsError, load_model, save_weights


@pytest.fixture(scope='module')
def random_model():
    # without shipped weights load_model falls back to a seeded random head
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr('diffpose_ros.model.weights.default_weights_path', lambda: None)
        model, trained = load_model(None, seed=0)
    assert not trained
    return model


def test_shipped_weights_load_by_default_when_present():
    from diffpose_ros.model.files import default_weights_path

    path = default_weights_path()
    if path is None:
        pytest.fail('models/diffpose_yolo11n_coco17.safetensors is missing: the shipped '
                    'model must be in the repository')
    model, trained = load_model(None)
    assert trained
    assert path.stat().st_size < 8_000_000  # float16 head: a few MB
    reloaded, _ = load_model(path)
    for (name, a), b in zip(model.head_state_dict().items(),
                            reloaded.head_state_dict().values()):
        assert torch.equal(a, b), name


def test_config_round_trip_and_validation(tmp_path):
    config = ModelConfig(strl_depth=5, decoder_dims=(96, 48, 24))
    config.save(tmp_path / 'c.json')
    assert ModelConfig.load(tmp_path / 'c.json') == config
    for bad in (
        {'strl_dim': 250},
        {'crop_height': 250},
        {'backbone': 'resnet'},
        {'heatmap_stride': 3},
        {'signal_scale': 0.0},
        {'strl_token_pool': 3},
    ):
        with pytest.raises(ValueError):
            ModelConfig(**bad)
    with pytest.raises(ValueError, match='unknown ModelConfig keys'):
        ModelConfig.from_dict({'strl_dim': 256, 'bogus': 1})
    for bad in (
        {'steps': 0},
        {'hypotheses': 100},
        {'window_mode': 'future'},
        {'window_mode': 'centered', 'window_size': 4},
        {'detector_imgsz': 650},
        {'backend': 'tensorflow'},
        {'ddim_eta': 2.0},
    ):
        with pytest.raises(ValueError):
            PipelineConfig(**bad)


def test_paper_defaults():
    config = ModelConfig()
    assert (config.crop_height, config.crop_width) == (256, 192)
    assert (config.heatmap_height, config.heatmap_width) == (64, 48)
    assert (config.feature_height, config.feature_width) == (16, 12)
    assert config.strl_depth >= 4 and config.strl_dim >= 256
    assert PipelineConfig().window_size == 3 and PipelineConfig().window_mode == 'causal'


@torch.inference_mode()
def test_shapes_for_causal_and_centred_windows(random_model):
    crops = torch.rand(2 * 5, 3, 256, 192)
    features = random_model.extract_features(crops)
    assert features.shape == (10, 640, 16, 12)
    features = features.reshape(2, 5, 640, 16, 12)
    for offsets in ([-2, -1, 0], [-2, -1, 0, 1, 2]):
        window = features[:, : len(offsets)]
        condition = random_model.encode_window(window, torch.tensor(offsets))
        f1, f2, f3, c1, c2, c3 = condition
        assert f1.shape == (2, 64, 16, 12) and f2.shape == (2, 48, 32, 24)
        assert f3.shape == (2, 32, 64, 48)
        assert c1.shape == (2, 16 * 12, 64) and c2.shape == f2.shape and c3.shape == f3.shape
        rows = torch.tensor([0, 0, 1, 1, 1])
        x0 = random_model.denoise(
            torch.rand(5, 17, 64, 48), torch.tensor([999, 10, 5, 0, 500]), rows, *condition
        )
        assert x0.shape == (5, 17, 64, 48) and torch.isfinite(x0).all()


@torch.inference_mode()
def test_window_encoder_uses_frame_offsets_and_every_frame(random_model):
    features = random_model.extract_features(torch.rand(3, 3, 256, 192)).unsqueeze(0)
    base = random_model.encode_window(features, torch.tensor([-2, -1, 0]))[0]
    other_key = random_model.encode_window(features, torch.tensor([-1, 0, 1]))[0]
    changed = features.clone()
    changed[:, 0] = 0.0  # a non-key frame changes -> the condition changes
    moved = random_model.encode_window(changed, torch.tensor([-2, -1, 0]))[0]
    assert not torch.allclose(base, other_key)
    assert not torch.allclose(base, moved)


def test_backbone_frozen_and_head_trainable(random_model):
    assert all(not p.requires_grad for p in random_model.backbone.parameters())
    random_model.train()
    assert not random_model.backbone.training  # BatchNorm statistics stay frozen
    random_model.eval()
    assert all(p.requires_grad for p in random_model.window_encoder.parameters())
    assert all(not k.startswith('backbone.') for k in random_model.head_state_dict())


def test_weights_round_trip_without_pickle(random_model, tmp_path):
    path = save_weights(random_model, tmp_path / 'head.safetensors', metadata={'note': 'test'})
    assert (tmp_path / 'head.json').is_file()
    assert path.read_bytes()[:1] != b'\x80'  # not a pickle
    loaded, trained = load_model(path, seed=123)  # a different seed: weights must win
    assert trained
    inputs = (torch.rand(1, 3, 640, 16, 12), torch.tensor([-2, -1, 0]))
    with torch.inference_mode():
        for a, b in zip(random_model.encode_window(*inputs), loaded.encode_window(*inputs)):
            torch.testing.assert_close(a, b)


def test_bad_weights_files_name_the_file(random_model, tmp_path):
    with pytest.raises(WeightsError, match='does not exist'):
        load_model(tmp_path / 'nope.safetensors')
    corrupt = tmp_path / 'corrupt.safetensors'
    corrupt.write_bytes(b'\x00garbage' * 100)
    ModelConfig().save(tmp_path / 'corrupt.json')
    with pytest.raises(WeightsError, match='corrupt.safetensors'):
        load_model(corrupt)
    path = save_weights(random_model, tmp_path / 'ok.safetensors')
    (tmp_path / 'ok.json').unlink()
    with pytest.raises(WeightsError, match='ok.json'):
        load_model(path)
    save_weights(random_model, path)
    (tmp_path / 'ok.json').write_text(json.dumps({'strl_dim': 384, 'strl_heads': 8}))
    with pytest.raises(WeightsError, match='does not match'):
        load_model(path)


def _synthetic_vitpose_b_state_dict() -> dict[str, torch.Tensor]:
    """Keys and shapes of a ViTPose-B (mmpose) checkpoint, random values."""
    generator = torch.Generator().manual_seed(0)
    dim, mlp = 768, 3072

    def rand(*shape):
        return torch.randn(*shape, generator=generator) * 0.02

    state = {
        'backbone.patch_embed.proj.weight': rand(dim, 3, 16, 16),
        'backbone.patch_embed.proj.bias': rand(dim),
        'backbone.pos_embed': rand(1, 16 * 12 + 1, dim),
        'backbone.last_norm.weight': torch.ones(dim),
        'backbone.last_norm.bias': torch.zeros(dim),
        'keypoint_head.final_layer.weight': rand(17, 256, 1, 1),
        'keypoint_head.final_layer.bias': rand(17),
    }
    for i in range(12):
        prefix = f'backbone.blocks.{i}.'
        state.update(
            {
                prefix + 'norm1.weight': torch.ones(dim),
                prefix + 'norm1.bias': rand(dim),
                prefix + 'attn.qkv.weight': rand(3 * dim, dim),
                prefix + 'attn.qkv.bias': rand(3 * dim),
                prefix + 'attn.proj.weight': rand(dim, dim),
                prefix + 'attn.proj.bias': rand(dim),
                prefix + 'norm2.weight': torch.ones(dim),
                prefix + 'norm2.bias': rand(dim),
                prefix + 'mlp.fc1.weight': rand(mlp, dim),
                prefix + 'mlp.fc1.bias': rand(mlp),
                prefix + 'mlp.fc2.weight': rand(dim, mlp),
                prefix + 'mlp.fc2.bias': rand(dim),
            }
        )
    return state


def test_vit_option_loads_vitpose_b_state_dict():
    state = _synthetic_vitpose_b_state_dict()
    backbone = ViTPoseBackbone()
    backbone.load_vitpose_state_dict(state)
    torch.testing.assert_close(
        backbone.blocks[7].attn.qkv.weight, state['backbone.blocks.7.attn.qkv.weight']
    )
    torch.testing.assert_close(backbone.pos_embed, state['backbone.pos_embed'])
    config = ModelConfig(backbone='vit-b', backbone_channels=768, fine_feature_channels=0)
    model = DiffPoseNet(config, backbone=backbone).eval()
    with torch.inference_mode():
        features = model.extract_features(torch.rand(1, 3, 256, 192))
        assert features.shape == (1, 768, 16, 12)
        f1 = model.encode_window(features.unsqueeze(1), torch.tensor([0]))[0]
    assert np.isfinite(f1.numpy()).all()
    broken = dict(state)
    broken['backbone.blocks.0.attn.qkv.weight'] = torch.zeros(10, 10)
    with pytest.raises((ValueError, RuntimeError)):
        ViTPoseBackbone().load_vitpose_state_dict(broken)
    del state['backbone.blocks.11.mlp.fc2.bias']
    with pytest.raises(ValueError, match='missing'):
        ViTPoseBackbone().load_vitpose_state_dict(state)


@torch.inference_mode()
def test_precomputed_fusion_terms_equal_fusing_the_concatenation():
    """The step-independent halves of the fusions (computed once per window) give what the
    fusion of [gated ; F] gives, with FiLM and every weight non-zero."""
    from diffpose_ros.model.denoiser import LMSFIDenoiser, _fuse, _fusion_condition_term

    torch.manual_seed(0)
    denoiser = LMSFIDenoiser(ModelConfig()).eval()
    for param in denoiser.parameters():
        torch.nn.init.normal_(param, std=0.1)
    cond = torch.randn(3, 4 * ModelConfig().time_embed_dim)
    for block, d, size in ((denoiser.fuse2, 48, (32, 24)), (denoiser.fuse3, 32, (64, 48))):
        gated, features = torch.randn(3, d, *size), torch.randn(3, d, *size)
        whole = block(torch.cat([gated, features], dim=1), cond)
        split = _fuse(block, gated, _fusion_condition_term(block, features),
                      *block.norm_affine(cond, 3))
        torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)
        assert whole.abs().max() > 0.1
    f1 = torch.randn(3, 64, 16, 12)
    gated1 = torch.randn(3, 64, 16, 12)
    c1, _, _ = denoiser.condition_terms(f1, torch.randn(3, 48, 32, 24),
                                        torch.randn(3, 32, 64, 48))
    whole = denoiser.trans_in(denoiser._tokens(torch.cat([gated1, f1], dim=1)))
    split = torch.nn.functional.linear(denoiser._tokens(gated1),
                                       denoiser.trans_in.weight[:, :64]) + c1
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)


def _reference_step(denoiser, model_input, t, person_index, f1, f2, f3):
    """The step as the paper's blocks read, unsplit: FiLM applied after each GroupNorm from
    the time embedding, fusions of the concatenations, F.interpolate upsampling."""
    import torch.nn.functional as F

    from diffpose_ros.model.layers import sinusoidal_embedding

    def block(module, x, cond):
        x = module.norm(module.pointwise(module.depthwise(x)))
        scale, shift = module.film(cond).chunk(2, dim=1)
        return module.act(x * (1 + scale[:, :, None, None]) + shift[:, :, None, None])

    def mask(x):
        return torch.sigmoid(x.amax(dim=1, keepdim=True))

    f1, f2, f3 = f1[person_index], f2[person_index], f3[person_index]
    temb = denoiser.time_mlp(sinusoidal_embedding(t, denoiser.time_embed_dim))
    scale, shift = denoiser.time_film(temb).chunk(2, dim=1)
    x = model_input * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    cond = denoiser.time_act(temb)
    x3 = block(denoiser.down3, x, cond)
    x2 = block(denoiser.down2, x3, cond)
    x1 = block(denoiser.down1, x2, cond)
    b, d1, h, w = x1.shape
    tok_a, tok_b = (v[:, None, :] for v in denoiser.time_tokens(cond).chunk(2, dim=1))
    refined1 = denoiser.seref(denoiser._tokens(x1) + tok_a).transpose(1, 2).reshape(b, d1, h, w)
    z1 = denoiser.trans_in(denoiser._tokens(torch.cat([mask(refined1) * f1, f1], dim=1)))
    z1 = denoiser.out1(denoiser.trans(z1 + tok_b).transpose(1, 2).reshape(b, d1, h, w))
    z2 = denoiser.out2(block(denoiser.fuse2, torch.cat(
        [mask(block(denoiser.refine2, x2, cond)) * f2, f2], dim=1), cond))
    z3 = block(denoiser.fuse3, torch.cat(
        [mask(block(denoiser.refine3, x3, cond)) * f3, f3], dim=1), cond)
    size = z3.shape[-2:]
    fused = (z3 + F.interpolate(z2, size=size, mode='bilinear', align_corners=False)
             + F.interpolate(z1, size=size, mode='bilinear', align_corners=False))
    return denoiser.head(fused)


def test_step_with_time_terms_equals_the_unsplit_step():
    """Time terms computed apart (FiLM folded into each norm's affine, once per timestep) and
    upsampling by matrix products give the unsplit step's x0, for per-row timesteps and for
    one timestep's terms broadcast over every row (what the ONNX runtime feeds)."""
    from diffpose_ros.model.denoiser import TIME_TERM_NAMES, LMSFIDenoiser

    torch.manual_seed(0)
    config = ModelConfig()
    denoiser = LMSFIDenoiser(config).eval()
    for param in denoiser.parameters():
        torch.nn.init.normal_(param, std=0.1)
    persons, rows = 2, 4
    f1 = torch.randn(persons, 64, 16, 12)
    f2 = torch.randn(persons, 48, 32, 24)
    f3 = torch.randn(persons, 32, 64, 48)
    condition = (f1, f2, f3, *denoiser.condition_terms(f1, f2, f3))
    model_input = torch.rand(rows, config.num_keypoints, 64, 48)
    person_index = torch.tensor([0, 1, 0, 1])
    with torch.inference_mode():
        for t in (torch.tensor([10, 300, 700, 999]), torch.full((rows,), 150)):
            want = _reference_step(denoiser, model_input, t, person_index, f1, f2, f3)
            got = denoiser(model_input, t, person_index, *condition)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            assert want.std() > 0.05
        shared = denoiser.time_terms(torch.tensor([150]))
        assert len(shared) == len(TIME_TERM_NAMES)
        assert all(len(term) == 1 for term in shared)
        rows = tuple(c[person_index] for c in condition)
        broadcast = denoiser.forward_timed(model_input, *rows, *shared)
        torch.testing.assert_close(broadcast, got, rtol=1e-5, atol=1e-5)
