"""The venv holds exactly one OpenCV and one ONNX Runtime distribution (same import names)."""

from __future__ import annotations

from importlib import metadata


def _installed(prefix: str) -> list[str]:
    names = {(dist.metadata['Name'] or '').lower() for dist in metadata.distributions()}
    return sorted(name for name in names if name.startswith(prefix))


def test_exactly_one_opencv_distribution():
    assert _installed('opencv') == ['opencv-python-headless']


def test_exactly_one_onnxruntime_distribution():
    assert _installed('onnxruntime') == ['onnxruntime-gpu']
