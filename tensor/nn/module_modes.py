"""``Module``'s modes and devices: ``train``/``eval``, ``requires_grad_``, ``zero_grad``,
``apply``, and ``to``/``cuda``/``cpu``/``float``/``double``/``half`` (every parameter and
buffer moved or cast in place). ``ModuleModes`` is a mixin of ``Module``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dtrain._tensor.nn.module_device import move_in_place, to_arguments
from dtrain.runtime.device import Device, cuda_device
from dtrain.runtime.dtypes import to_dtype

if TYPE_CHECKING:
    from dtrain._tensor.nn.module import Module


class ModuleModes:
    """Mixed into ``Module``: modes (train/eval), gradients and devices/dtypes."""

    def train(self, mode: bool = True) -> Module:
        """Training mode (dropout active, batch statistics) for this module and below.

        Calls ``train`` on each child, so a sub-module that overrides it is honoured.
        """
        if not isinstance(mode, bool):
            raise ValueError(f"train(mode): mode must be a bool, got {mode!r}")
        object.__setattr__(self, "training", mode)
        for module in self.children():
            module.train(mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Turn gradient tracking on or off for every parameter."""
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) every parameter's gradient."""
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.zero_()

    def apply(self, fn: Callable[[Module], None]) -> Module:
        """Call ``fn`` on every sub-module and then on this one (e.g. custom init)."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    def to(self, *args: Any, **kwargs: Any) -> Module:
        """Move and/or cast every parameter and buffer in place, as PyTorch's forms:
        ``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(tensor)`` (its device and
        dtype), each with an optional ``non_blocking``. A device is ``"cpu"``, ``"cuda:N"``,
        a ``Device`` or an int (a CUDA index); only floating-point tensors are cast, and
        only to a float dtype."""
        device, dtype = to_arguments(args, kwargs)
        if dtype is not None and dtype.kind != "f":
            raise TypeError(f"Module.to() only casts to float dtypes, got {dtype}")
        for tensor in (*self.parameters(), *self.buffers()):
            move_in_place(tensor, device, dtype)
            if tensor.grad is not None:
                move_in_place(tensor.grad, device, dtype)
        return self

    def cuda(self, device: int | str | Device | None = None) -> Module:
        """Move every parameter and buffer to a GPU: the current one unless ``device`` names
        another."""
        return self.to(cuda_device(device))

    def cpu(self) -> Module:
        """Move every parameter and buffer to the CPU."""
        return self.to("cpu")

    def float(self) -> Module:
        """Cast floating-point parameters and buffers to float32."""
        return self.to(to_dtype("float32"))

    def double(self) -> Module:
        """Cast floating-point parameters and buffers to float64."""
        return self.to(to_dtype("float64"))

    def share_memory(self) -> Module:
        """Not offered: dtrain tensors cannot be shared between processes (Hogwild).

        Raises:
            NotImplementedError: always, naming the alternative.
        """
        raise NotImplementedError(
            "share_memory: dtrain cannot share a model's tensors between processes "
            "(Hogwild); train one process per rank with dtrain.parallel."
            "DistributedDataParallel (dtrain.multiprocessing.spawn or dtrain launch starts them)"
        )

    def half(self) -> Module:
        """Cast floating-point parameters and buffers to float16."""
        return self.to(to_dtype("float16"))
