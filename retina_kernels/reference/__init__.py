"""Plain-PyTorch references of every op: the test oracles, and the fallback without the extension.
Written for clarity from docs/ (the math of each op), independently of the C++/CUDA kernels (no shared code or tables)."""
