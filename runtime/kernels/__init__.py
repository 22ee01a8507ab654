"""Fused CUDA kernels (cupy RawModule), each with a numpy reference."""
