"""``instance_norm``, ``rms_norm`` and ``local_response_norm``, composed of the fused norms
and the tensor ops."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.nn.functional.normalization import batch_norm
from dtrain._tensor.nn.functional.padding import pad
from dtrain._tensor.nn.functional.pooling import avg_pool2d
from dtrain._tensor.tensor import Tensor


def instance_norm(
    input: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise each channel of each sample over its spatial positions, then scale and
    shift per channel: ``batch_norm`` of the ``(1, N·C, ...)`` view, as PyTorch. With
    ``use_input_stats`` and running statistics, these move towards the batch's mean of the
    per-instance statistics; without ``use_input_stats`` the running ones are used.

    Raises:
        ValueError: fewer than 3 dims, or parameters of the wrong shape.
    """
    if not isinstance(input, Tensor) or input.ndim < 3:
        shape = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(f"instance_norm: expected input of shape (N, C, ...), got {shape}")
    n, c = input.shape[:2]
    for name, t in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ):
        if t is not None and tuple(t.shape) != (c,):
            raise ValueError(
                f"instance_norm: {name} has shape {tuple(t.shape)} but the input "
                f"{tuple(input.shape)} has {c} channels; expected ({c},)"
            )
    if (running_mean is None) != (running_var is None):
        raise ValueError("instance_norm: pass running_mean and running_var together (or neither)")
    if not use_input_stats and running_mean is None:
        raise ValueError("instance_norm: use_input_stats=False needs running_mean and running_var")
    if use_input_stats and input.shape[2:] and int(np.prod(input.shape[2:])) <= 1:
        raise ValueError(
            f"instance_norm: expected more than 1 spatial element per channel, got input of "
            f"shape {tuple(input.shape)}"
        )
    if n == 0:  # an empty batch: nothing to normalise, and no statistics to update
        out = input.clone()
        per_channel = (c,) + (1,) * (input.ndim - 2)
        out = out if weight is None else out * weight.reshape(per_channel)
        return out if bias is None else out + bias.reshape(per_channel)
    folded = input.reshape(1, n * c, *input.shape[2:])
    mean = var = None
    if running_mean is not None:
        mean, var = running_mean.detach().repeat(n), running_var.detach().repeat(n)
    out = batch_norm(folded, mean, var, None, None, use_input_stats, momentum, eps)
    if use_input_stats and running_mean is not None:
        with no_grad():  # each channel's new running value: the mean over the batch
            running_mean.copy_(mean.reshape(n, c).mean(0))
            running_var.copy_(var.reshape(n, c).mean(0))
    out = out.reshape(input.shape)
    per_channel = (c,) + (1,) * (input.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(per_channel)
    if bias is not None:
        out = out + bias.reshape(per_channel)
    return out


def _trailing_shape(where: str, input: Tensor, normalized_shape: Any) -> tuple:
    shape = (
        (int(normalized_shape),)
        if isinstance(normalized_shape, (int, np.integer))
        else tuple(int(s) for s in normalized_shape)
    )
    if tuple(input.shape[input.ndim - len(shape) :]) != shape or len(shape) > input.ndim:
        raise ValueError(
            f"{where}: normalized_shape {shape} does not match the trailing dims of the "
            f"input's shape {tuple(input.shape)}"
        )
    return shape


def rms_norm(
    input: Tensor,
    normalized_shape: Any,
    weight: Tensor | None = None,
    eps: float | None = None,
) -> Tensor:
    """``input / sqrt(mean(input², trailing dims) + eps) · weight``; ``eps=None`` means the
    machine epsilon of the dtype it is computed in (float32 for float16), as PyTorch.
    float16 is computed in float32 and rounded once."""
    where = "rms_norm"
    shape = _trailing_shape(where, input, normalized_shape)
    if weight is not None and tuple(weight.shape) != shape:
        raise ValueError(f"{where}: weight has shape {tuple(weight.shape)}, expected {shape}")
    if input.dtype.kind != "f":
        raise TypeError(f"{where}: input dtype {input.dtype} is not a float; call .float() first")
    if eps is None:  # the computing dtype's: float32's for float16 input, as PyTorch
        eps = float(np.finfo(np.float32 if input.dtype == np.float16 else input.dtype).eps)
    x = input.float() if input.dtype == np.float16 else input
    dims = tuple(range(input.ndim - len(shape), input.ndim))
    out = x * ((x * x).mean(dims, keepdim=True) + eps).rsqrt()
    if out.dtype != input.dtype:
        out = out.to(input.dtype)
    return out if weight is None else out * weight


def local_response_norm(
    input: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
) -> Tensor:
    """Normalise each element by the squares of its ``size`` neighbouring channels:
    ``x / (k + alpha / size · Σ x²)^beta``, zero-padded at the channel ends (PyTorch's)."""
    if not isinstance(input, Tensor) or input.ndim < 3:
        shape = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(
            f"local_response_norm: expected 3 or more dims (N, C, ...), got input of {shape}"
        )
    if input.numel() == 0:
        return input
    n, c = input.shape[:2]
    squares = (input * input).reshape(n, 1, c, -1)
    padded = pad(squares, (0, 0, size // 2, (size - 1) // 2))
    mean = avg_pool2d(padded, (size, 1), stride=1).reshape(input.shape)
    return input / (mean * alpha + k) ** beta


__all__ = ["instance_norm", "local_response_norm", "rms_norm"]
