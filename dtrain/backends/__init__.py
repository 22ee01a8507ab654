"""``dt.backends``: PyTorch's backend switches, so scripts that set them run unchanged.

``dt.backends.cuda.matmul.allow_tf32`` is real: it is ``set_float32_matmul_precision``
(``True`` = ``"high"``, TF32 tensor cores for float32 products on CUDA). dtrain has no
cuDNN and no MPS: ``dt.backends.cudnn``'s flags are kept but change nothing, and
``dt.backends.mps.is_available()`` is False.
"""

from dtrain.backends import cuda, cudnn, mps

__all__ = ["cuda", "cudnn", "mps"]
