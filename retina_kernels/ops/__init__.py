"""Thin typed wrappers over torch.ops.retina.*: validation, dtype handling, fake kernels, fallback."""
