"""``dt.backends.cudnn``: PyTorch's cuDNN flags, kept so scripts that set them run.

dtrain uses no cuDNN (its convolutions are matrix products through cuBLAS), so the flags
change nothing: ``benchmark`` (no algorithm search to enable), ``deterministic`` (the
convolutions are already deterministic), ``allow_tf32`` (float32 products follow
``dt.backends.cuda.matmul.allow_tf32``).
"""

from __future__ import annotations

benchmark = False
deterministic = False
enabled = True
allow_tf32 = True


def is_available() -> bool:
    """False: dtrain does not use cuDNN."""
    return False


__all__ = ["allow_tf32", "benchmark", "deterministic", "enabled", "is_available"]
