"""``DataParallel``: PyTorch's single-process multi-GPU wrapper, as a plain wrapper.

dtrain runs one device per process (``dtrain launch`` starts a process per GPU, with
``DistributedDataParallel``), so ``DataParallel`` does not split the batch: it holds the
module as ``.module`` (state-dict keys get PyTorch's ``module.`` prefix, so checkpoints
match) and calls it on the whole batch, on the module's device.
"""

from __future__ import annotations

import warnings
from typing import Any

from dtrain._tensor.nn.module import Module


class DataParallel(Module):
    """Wrap ``module`` and call it, as PyTorch's ``DataParallel`` on one device.

    Args:
        module: the module to wrap (``.module``).
        device_ids: accepted for PyTorch's signature; more than one warns that the batch
            runs on one device (use ``DistributedDataParallel`` under ``dtrain launch``).
        output_device: accepted and ignored (the output stays where the module ran).
        dim: the batch dim PyTorch would scatter along; accepted, unused.
    """

    def __init__(
        self,
        module: Module,
        device_ids: Any = None,
        output_device: Any = None,
        dim: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(
                f"DataParallel: module must be an nn.Module, got {type(module).__name__}"
            )
        self.module = module
        self.device_ids = None if device_ids is None else list(device_ids)
        self.output_device, self.dim = output_device, dim
        if self.device_ids is not None and len(self.device_ids) > 1:
            warnings.warn(
                f"DataParallel(device_ids={self.device_ids}): dtrain runs one device per "
                "process, so the whole batch runs on the module's device; for several GPUs "
                "use DistributedDataParallel under `dtrain launch`",
                stacklevel=2,
            )

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        return self.module(*inputs, **kwargs)
