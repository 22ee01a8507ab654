"""How float32 matrix products run on CUDA, as ``torch.set_float32_matmul_precision``.

``"highest"`` (the default, PyTorch's too) keeps full float32 arithmetic. ``"high"`` lets
cuBLAS use TF32 tensor cores (10-bit mantissa products, float32 accumulation): several
times the float32 throughput on Ampere and later, at about 1e-3 relative error.
``"medium"`` is taken as ``"high"`` (PyTorch may use bfloat16 there; cupy has none). The
setting is the process's and changes what later products do; the CPU (numpy) always
computes in full float32.
"""

from __future__ import annotations

import numpy as np

from dtrain.runtime import cublas
from dtrain.runtime.backend import cupy_module

PRECISIONS = ("highest", "high", "medium")
_COMPUTE_32F, _COMPUTE_32F_FAST_TF32 = 68, 77  # cublasComputeType_t (CUDA 13's cublas_api.h)
_precision = "highest"


def set_float32_matmul_precision(precision: str) -> None:
    """Full float32 (``"highest"``) or TF32 (``"high"``, ``"medium"``) float32 products."""
    global _precision
    if precision not in PRECISIONS:
        raise ValueError(
            f"set_float32_matmul_precision: unknown precision {precision!r}; use one of "
            f"{', '.join(PRECISIONS)}"
        )
    _precision = precision
    _apply()


def get_float32_matmul_precision() -> str:
    """The current setting: ``"highest"``, ``"high"`` or ``"medium"``."""
    return _precision


def float32_compute_type() -> int:
    """The cublasComputeType of float32 products under the current setting."""
    return _COMPUTE_32F if _precision == "highest" else _COMPUTE_32F_FAST_TF32


def _apply() -> None:
    # dtrain's cuBLAS calls read the compute type from the table of types per dtype; cupy's
    # own products (the paths dtrain leaves to cupy) from cupy's switch.
    entry = cublas._TYPES[np.dtype(np.float32)]
    cublas._TYPES[np.dtype(np.float32)] = (entry[0], float32_compute_type(), *entry[2:])
    cupy = cupy_module()  # None without a GPU: nothing of cupy's to switch
    linalg = getattr(getattr(cupy, "_core", None), "_routines_linalg", None)
    if linalg is not None and hasattr(linalg, "set_compute_type"):
        tf32 = _precision != "highest"
        mode = linalg.COMPUTE_TYPE_TF32 if tf32 else linalg.COMPUTE_TYPE_DEFAULT
        linalg.set_compute_type(np.dtype(np.float32), mode)
