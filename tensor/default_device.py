"""``dt.set_default_device``: the device factory functions use when a call names none.

PyTorch's tutorials start with ``torch.set_default_device(device)`` and then build every
tensor and model without a ``device=``. Each factory (``tensor``, ``zeros``, ``randn``,
``arange``, ...) is wrapped by ``uses_default_device``: a call that passes no device gets
the default one. Functions that follow another tensor (``zeros_like``, ``x.new_zeros``)
keep following it, as in PyTorch. The default is process-wide (PyTorch's is per thread):
DataLoader workers and collective threads build their tensors where the training loop does.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from dtrain.runtime.device import Device

_default: Device | None = None  # None: the CPU, and factories take their fast path


def set_default_device(device: Any) -> None:
    """Make ``device`` (``"cuda"``, ``"cuda:1"``, ``"cpu"``, a ``dt.device``, an int GPU
    index or None for the CPU) where factory functions put tensors given no ``device=``.

    Raises:
        ValueError: ``device`` is not a device dtrain knows (e.g. ``"mps"``).
    """
    global _default
    chosen = None if device is None else Device(device)
    _default = None if chosen is None or chosen.type == "cpu" else chosen


def get_default_device() -> Device:
    """The device factory functions use when given none (``device('cpu')`` unless set)."""
    return _default if _default is not None else Device("cpu")


def uses_default_device(factory: Callable) -> Callable:
    """Wrap ``factory`` so that a call without a ``device`` gets the default device."""
    parameters = list(inspect.signature(factory).parameters.values())
    names = [p.name for p in parameters]
    positional = [
        p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    # A device passed by position counts as given: its index among the positional ones.
    device_at = positional.index("device") if "device" in positional else None
    if "device" not in names:
        raise TypeError(f"{factory.__name__} takes no device argument to default")

    @functools.wraps(factory)
    def with_default(*args: Any, **kwargs: Any) -> Any:
        if _default is None or kwargs.get("device") is not None:
            return factory(*args, **kwargs)
        if device_at is not None and len(args) > device_at:
            if args[device_at] is not None:
                return factory(*args, **kwargs)
            args = args[:device_at] + (_default,) + args[device_at + 1 :]
            return factory(*args, **kwargs)
        return factory(*args, **{**kwargs, "device": _default})

    return with_default
