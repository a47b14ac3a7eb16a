"""Inference backends with one API: PyTorch (CPU/CUDA, optional fp16) and ONNX Runtime."""
