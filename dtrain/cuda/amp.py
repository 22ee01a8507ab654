"""``dt.cuda.amp``: the older spelling of ``dt.amp`` with the device fixed to CUDA, as
``torch.cuda.amp`` (which PyTorch deprecates in favour of ``torch.amp``)."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.amp import GradScaler as _GradScaler
from dtrain._tensor.amp import autocast as _autocast
from dtrain.runtime.dtypes import float16


class autocast(_autocast):  # noqa: N801 - PyTorch's name
    """``dt.autocast("cuda", ...)``."""

    def __init__(
        self, enabled: bool = True, dtype: Any = float16, cache_enabled: bool = True
    ) -> None:
        super().__init__("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


class GradScaler(_GradScaler):
    """``dt.amp.GradScaler("cuda", ...)``."""

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        super().__init__(
            "cuda", init_scale, growth_factor, backoff_factor, growth_interval, enabled
        )


__all__ = ["GradScaler", "autocast"]
