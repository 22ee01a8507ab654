"""``dtrain.amp``: automatic mixed precision, as ``torch.amp``.

``autocast`` runs matmul-heavy ops in float16 inside a region and numerically sensitive ones
in float32; ``GradScaler`` scales the loss so float16 gradients do not underflow. See
``docs/amp.md`` for the op lists and where dtrain differs from PyTorch.
"""

from dtrain._tensor.amp import (
    GradScaler,
    autocast,
    clear_autocast_cache,
    get_autocast_dtype,
    is_autocast_enabled,
)

__all__ = [
    "GradScaler",
    "autocast",
    "clear_autocast_cache",
    "get_autocast_dtype",
    "is_autocast_enabled",
]
