"""scripts/interpolate_weights.py (WiSE-FT between two heads): the arithmetic, the file format
the loader reads, and clear refusals."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from diffpose_ros.config import ModelConfig
from diffpose_ros.model.files import config_path_for

SCRIPT = Path(__file__).resolve().parents[1] / 'scripts' / 'interpolate_weights.py'


def _script():
    spec = importlib.util.spec_from_file_location('interpolate_weights', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _head(path: Path, value: float, config: ModelConfig) -> Path:
    save_file({'a.weight': torch.full((2, 3), value, dtype=torch.float16),
               'b.bias': torch.full((4,), 2 * value),
               'steps': torch.tensor([7], dtype=torch.int64)}, str(path))
    config.save(config_path_for(path))
    return path


def test_interpolation_is_the_weighted_mean_stored_as_float16(tmp_path):
    script = _script()
    config = ModelConfig()
    a = _head(tmp_path / 'a.safetensors', 1.0, config)
    b = _head(tmp_path / 'b.safetensors', 3.0, config)
    out = script.interpolate(a, b, 0.25, tmp_path / 'soup' / 'head.safetensors')
    state = load_file(str(out))
    assert torch.equal(state['a.weight'], torch.full((2, 3), 1.5, dtype=torch.float16))
    assert torch.equal(state['b.bias'], torch.full((4,), 3.0, dtype=torch.float16))
    assert torch.equal(state['steps'], torch.tensor([7]))           # integers are not mixed
    assert ModelConfig.load(config_path_for(out)) == config         # the loader's config file
    with safe_open(str(out), 'pt') as handle:
        meta = handle.metadata()
    assert meta['format'] == 'diffpose_ros-head-v1'
    assert json.loads(meta['interpolation'])['alpha'] == 0.25


def test_heads_of_different_architectures_or_bad_alpha_are_refused(tmp_path, capsys):
    script = _script()
    a = _head(tmp_path / 'a.safetensors', 1.0, ModelConfig())
    other = dataclasses.replace(ModelConfig(), strl_depth=2)
    b = _head(tmp_path / 'b.safetensors', 3.0, other)
    with pytest.raises(ValueError, match='different configs'):
        script.interpolate(a, b, 0.5, tmp_path / 'x.safetensors')
    with pytest.raises(ValueError, match='alpha'):
        script.interpolate(a, a, 1.5, tmp_path / 'x.safetensors')
    assert script.main([str(a), str(tmp_path / 'missing.safetensors'), '--alpha', '0.5',
                        '--out', str(tmp_path / 'x.safetensors')]) == 2
    assert 'does not exist' in capsys.readouterr().err
