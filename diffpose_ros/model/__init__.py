"""DiffPose network (PyTorch): backbone, STRL, LMSFI denoiser, weights I/O."""
