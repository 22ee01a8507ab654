"""``gradcheck``: compare autograd's gradients with central finite differences."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from dtrain._tensor.autograd.api import grad
from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.device import as_numpy


class GradcheckError(RuntimeError):
    """Analytic and numeric gradients disagree."""


def gradcheck(
    function: Callable[..., Tensor],
    inputs: Sequence[Tensor] | Tensor,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    seed: int = 0,
) -> bool:
    """Check the gradient of ``function`` at ``inputs`` (use float64 inputs).

    The output is projected on a fixed random direction, so one backward checks every
    element; each input element is then perturbed by ``±eps``.
    """
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    differentiable = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if not differentiable:
        raise ValueError("gradcheck: no input requires grad; nothing to check")
    for t in differentiable:
        if t.dtype != np.float64:
            raise ValueError(f"gradcheck needs float64 inputs for accuracy, got {t.dtype}")
    output = function(*inputs)
    direction = np.random.default_rng(seed).standard_normal(output.shape)
    # On the output's device, so a CUDA function is checked on CUDA.
    on_device = get_array_module(output._array).asarray(direction)

    def projected() -> float:
        return float((as_numpy(function(*inputs)._array).astype(np.float64) * direction).sum())

    analytic = grad((output * wrap(on_device)).sum(), differentiable, allow_unused=True)
    for position, (t, g) in enumerate(zip(differentiable, analytic)):
        expected = np.zeros(t.shape) if g is None else as_numpy(g._array).astype(np.float64)
        numeric = np.zeros(t.shape)
        array = t._array  # perturbed in place, element by element (any memory layout)
        with no_grad():
            for index in np.ndindex(*t.shape):
                original = array[index].copy()  # cupy's array[index] is a view
                array[index] = original + eps
                plus = projected()
                array[index] = original - eps
                minus = projected()
                array[index] = original
                numeric[index] = (plus - minus) / (2 * eps)
        if not np.allclose(expected, numeric, atol=atol, rtol=rtol):
            worst = np.unravel_index(np.argmax(np.abs(expected - numeric)), t.shape)
            message = (
                f"gradcheck: input {position} (shape {t.shape}) gradient mismatch; worst at "
                f"{tuple(int(i) for i in worst)}: analytic {expected[worst]:.6g}, numeric "
                f"{numeric[worst]:.6g}"
            )
            if raise_exception:
                raise GradcheckError(message)
            return False
    return True
