"""``GradScaler``: dynamic loss scaling for float16 training, as ``torch.amp.GradScaler``.

float16 gradients underflow to zero below ~6e-8. The scaler multiplies the loss by a large
factor before backward, divides the gradients by it before the optimizer step, and skips
the step when a gradient overflowed to inf/NaN, halving the factor; after
``growth_interval`` clean steps in a row it doubles the factor again.

The scale lives on the host as a Python float (rounded to float32 as PyTorch keeps it), so
``scale()`` and ``update()`` never wait for the GPU. The inf/NaN check runs on each device
(on CUDA, fused with the unscale into one multi-tensor launch per dtype) and is read back
once, in ``step()``: one host synchronisation per step.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import (
    cupy_module,
    device_id,
    get_array_module,
    is_cuda_array,
    on_device_of,
)
from dtrain.runtime.kernels import unscale as _unscale_kernel
from dtrain.runtime.kernels.multi_tensor import fusable

_READY, _UNSCALED, _STEPPED = "ready", "unscaled", "stepped"


def _f32(value: float) -> float:
    """``value`` rounded to float32, the precision PyTorch keeps its scale in."""
    with np.errstate(over="ignore"):  # a scale grown past float32 becomes inf, then refused
        return float(np.float32(value))


def _overflow_probe(grad: Any) -> Any:
    """A 0-d float64 array on ``grad``'s device that is finite exactly when ``grad`` is.

    A float64 sum of float16/float32 values cannot overflow (3.4e38 times any element count
    stays far below 1.8e308), and an inf or NaN anywhere makes it inf or NaN, so one reduction
    without a temporary the size of the gradient answers the question.
    """
    xp = get_array_module(grad)
    with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN here is the expected news
        if grad.dtype == np.float64:  # a float64 sum could overflow: test elementwise
            return xp.where(xp.isfinite(grad).all(), 0.0, xp.inf)
        return grad.sum(dtype=xp.float64)


def read_found_inf(probes: dict[str, Any]) -> bool:
    """Read the per-device probes back to the host: the step's one synchronisation."""
    return any(not math.isfinite(float(probe)) for probe in probes.values())


def _device_key(array: Any) -> str:
    return f"cuda:{device_id(array)}" if is_cuda_array(array) else "cpu"


class GradScaler:
    """Scale the loss, unscale the gradients, skip steps whose gradients overflowed.

    ::

        scaler = dt.amp.GradScaler()
        for x, y in loader:
            opt.zero_grad()
            with dt.autocast("cuda"):
                loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)        # unscales, then steps unless a gradient is inf/NaN
            scaler.update()         # backs off after an overflow, grows after clean steps

    Args:
        device: ``"cuda"`` or ``"cpu"``. Without CUDA, a ``"cuda"`` scaler warns and
            disables itself, as PyTorch's does.
        init_scale: the first scale factor.
        growth_factor: multiplies the scale after ``growth_interval`` clean steps.
        backoff_factor: multiplies the scale after a step with an inf/NaN gradient.
        growth_interval: clean steps in a row before the scale grows.
        enabled: ``False`` makes every method a pass-through (``step`` just steps).

    Raises:
        ValueError: factors on the wrong side of 1, or a non-positive interval or scale.
    """

    def __init__(
        self,
        device: str = "cuda",
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        device_type = str(device).split(":")[0]
        if device_type not in ("cpu", "cuda"):
            raise ValueError(f"GradScaler: device must be 'cuda' or 'cpu', got {device!r}")
        if enabled and device_type == "cuda" and cupy_module() is None:
            warnings.warn(
                "GradScaler(device='cuda') is enabled, but CUDA is not available; disabling "
                "it. Pass device='cpu' to scale on the CPU.",
                stacklevel=2,
            )
            enabled = False
        self._device = device_type
        self._enabled = bool(enabled)
        if init_scale <= 0:
            raise ValueError(f"GradScaler: init_scale must be positive, got {init_scale}")
        if growth_factor <= 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got {backoff_factor}")
        if not isinstance(growth_interval, int) or growth_interval <= 0:
            raise ValueError(
                f"GradScaler: growth_interval must be a positive int, got {growth_interval!r}"
            )
        self._scale = _f32(init_scale)
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = growth_interval
        self._growth_tracker = 0
        self._per_optimizer: dict[int, dict[str, Any]] = {}

    # ---- the training step --------------------------------------------------------------
    def scale(self, outputs: Any) -> Any:
        """``outputs`` (a tensor, or a list/tuple/iterable of them) times the scale factor."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            return outputs * self._scale
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(output) for output in outputs)
        if isinstance(outputs, Iterable) and not isinstance(outputs, (str, bytes)):
            return (self.scale(output) for output in outputs)
        raise ValueError(
            f"GradScaler.scale: outputs must be a Tensor or an iterable of Tensors, got "
            f"{type(outputs).__name__}"
        )

    def unscale_(self, optimizer: Any) -> None:
        """Divide ``optimizer``'s gradients by the scale, in place, and note any inf/NaN.

        Call it before clipping gradients; ``step`` calls it when you have not. Once per
        optimizer per ``update()``.

        Raises:
            RuntimeError: called twice, or after ``step``, before ``update``.
            ValueError: a float16 gradient (keep parameters in float32 under autocast).
        """
        if not self._enabled:
            return
        state = self._state(optimizer)
        if state["stage"] == _UNSCALED:
            raise RuntimeError(
                "GradScaler.unscale_() has already been called on this optimizer since the "
                "last update(); call it once per step"
            )
        if state["stage"] == _STEPPED:
            raise RuntimeError(
                "GradScaler.unscale_() is being called after step(); call it before step(), "
                "then update()"
            )
        # PyTorch takes the reciprocal in float64 and keeps it in float32.
        inv_scale = np.float32(1.0 / self._scale)
        probes: dict[str, list] = {}
        fused: dict[tuple, list] = {}  # (device, dtype) -> gradients for one kernel launch
        for group in optimizer.param_groups:
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                array = grad._array
                if array.dtype == np.float16:
                    raise ValueError(
                        "GradScaler: attempting to unscale float16 gradients; keep the "
                        "parameters in float32 and let autocast cast them for each op"
                    )
                # In place either way, so views into DDP's gradient buckets stay views.
                if fusable(array):
                    fused.setdefault((device_id(array), array.dtype), []).append(array)
                else:  # the CPU, or an odd layout: check the scaled values, then unscale
                    probes.setdefault(_device_key(array), []).append(_overflow_probe(array))
                    array *= inv_scale.astype(array.dtype)
                grad._version[0] += 1
        flags: dict[int, Any] = {}
        for (device, _), arrays in fused.items():
            first = device not in flags  # the kernel sets it (no zeroing launch first)
            if first:
                with on_device_of(arrays[0]):
                    flags[device] = get_array_module(arrays[0]).empty((), np.float32)
            _unscale_kernel.unscale_(
                arrays, float(inv_scale), flags[device], checked=True, overwrite=first
            )
        for device, flag in flags.items():
            probes.setdefault(f"cuda:{device}", []).append(flag)
        state["found_inf"] = {
            key: values[0] if len(values) == 1 else get_array_module(values[0]).stack(values).sum()
            for key, values in probes.items()
        }
        state["stage"] = _UNSCALED

    def step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        """Unscale (unless done already) and run ``optimizer.step(*args, **kwargs)`` unless
        a gradient is inf/NaN. Returns what the step returned, or None when skipped.

        Raises:
            RuntimeError: a ``closure`` argument, a second ``step`` before ``update``, or an
                optimizer with no gradients at all.
        """
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError(
                "GradScaler.step does not support a closure; compute the loss, call "
                "scaler.scale(loss).backward(), then scaler.step(optimizer)"
            )
        state = self._state(optimizer)
        if state["stage"] == _STEPPED:
            raise RuntimeError(
                "GradScaler.step() has already been called since the last update(); call "
                "scaler.update() once per step"
            )
        if state["stage"] == _READY:
            self.unscale_(optimizer)
        if not state["found_inf"]:
            raise RuntimeError(
                "GradScaler.step: no inf checks were recorded for this optimizer: none of its "
                "parameters has a gradient; call backward() on the scaled loss first"
            )
        result = None if self._found_inf(state) else optimizer.step(*args, **kwargs)
        state["stage"] = _STEPPED
        return result

    def update(self, new_scale: float | Tensor | None = None) -> None:
        """Set the scale for the next step: ``new_scale`` if given, else back off after an
        inf/NaN this step or grow after ``growth_interval`` clean steps.

        Raises:
            RuntimeError: no optimizer was unscaled or stepped since the last update.
            TypeError: ``new_scale`` is neither a number nor a one-element float tensor.
        """
        if not self._enabled:
            return
        if new_scale is not None:
            if isinstance(new_scale, Tensor):
                if new_scale.numel() != 1 or not new_scale.is_floating_point():
                    raise TypeError(
                        f"GradScaler.update: new_scale must be a one-element float tensor, "
                        f"got shape {new_scale.shape} dtype {new_scale.dtype}"
                    )
                new_scale = new_scale.item()
            elif not isinstance(new_scale, (int, float)) or isinstance(new_scale, bool):
                raise TypeError(
                    f"GradScaler.update: new_scale must be a float or a one-element tensor, "
                    f"got {type(new_scale).__name__}"
                )
            self._scale = _f32(new_scale)
        else:
            checked = [s for s in self._per_optimizer.values() if s["found_inf"]]
            if not checked:
                raise RuntimeError(
                    "GradScaler.update: no inf checks were recorded since the last update; "
                    "call scaler.step(optimizer) (or unscale_) first"
                )
            if any([self._found_inf(s) for s in checked]):
                self._scale = _f32(self._scale * self._backoff_factor)
                self._growth_tracker = 0
            elif self._growth_tracker + 1 == self._growth_interval:
                grown = _f32(self._scale * self._growth_factor)
                if math.isfinite(grown):  # never grow to inf
                    self._scale = grown
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
        self._per_optimizer.clear()

    # ---- queries and settings -----------------------------------------------------------
    def get_scale(self) -> float:
        """The current scale factor (1.0 when disabled)."""
        return self._scale if self._enabled else 1.0

    def is_enabled(self) -> bool:
        """Whether this scaler scales (False after disabling itself for a missing GPU)."""
        return self._enabled

    def get_growth_factor(self) -> float:
        """The factor the scale grows by."""
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        """Set the factor the scale grows by."""
        self._growth_factor = float(new_factor)

    def get_backoff_factor(self) -> float:
        """The factor the scale backs off by."""
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        """Set the factor the scale backs off by."""
        self._backoff_factor = float(new_factor)

    def get_growth_interval(self) -> int:
        """Clean steps in a row before the scale grows."""
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        """Set the number of clean steps in a row before the scale grows."""
        self._growth_interval = int(new_interval)

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers (JSON-friendly, saveable with ``dt.save``); ``{}`` when disabled."""
        if not self._enabled:
            return {}
        return {
            "scale": self._scale,
            "growth_factor": self._growth_factor,
            "backoff_factor": self._backoff_factor,
            "growth_interval": self._growth_interval,
            "_growth_tracker": self._growth_tracker,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned.

        Raises:
            RuntimeError: an empty dict (saved from a disabled scaler).
            KeyError: a dict without one of the keys ``state_dict`` writes.
        """
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError(
                "GradScaler.load_state_dict: the state dict is empty, probably saved from a "
                "disabled GradScaler; save one from an enabled scaler"
            )
        missing = {"scale", "growth_factor", "backoff_factor", "growth_interval"} - set(state_dict)
        if missing:
            raise KeyError(f"GradScaler.load_state_dict: missing keys {sorted(missing)}")
        self._scale = _f32(state_dict["scale"])
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._growth_tracker = int(state_dict.get("_growth_tracker", 0))

    # ---- internals ----------------------------------------------------------------------
    def _state(self, optimizer: Any) -> dict[str, Any]:
        key = id(optimizer)
        if key not in self._per_optimizer:
            self._per_optimizer[key] = {"stage": _READY, "found_inf": {}, "host": None}
        return self._per_optimizer[key]

    def _found_inf(self, state: dict[str, Any]) -> bool:
        """Whether ``state``'s gradients held an inf/NaN: the one read back from the devices
        per step, remembered so ``update`` does not read it again."""
        if state["host"] is None:
            state["host"] = read_found_inf(state["found_inf"])
        return state["host"]

    def __repr__(self) -> str:
        scale, enabled = self.get_scale(), self._enabled
        return f"GradScaler(device={self._device!r}, scale={scale}, enabled={enabled})"


__all__ = ["GradScaler"]
