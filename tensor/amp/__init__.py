"""Mixed precision: autocast and the dynamic loss scaler (public as ``dtrain.amp``)."""

from dtrain._tensor.amp.autocast_mode import (
    autocast,
    clear_autocast_cache,
    get_autocast_dtype,
    is_autocast_enabled,
)
from dtrain._tensor.amp.cast import autocast_inputs
from dtrain._tensor.amp.grad_scaler import GradScaler

__all__ = [
    "GradScaler",
    "autocast",
    "autocast_inputs",
    "clear_autocast_cache",
    "get_autocast_dtype",
    "is_autocast_enabled",
]
