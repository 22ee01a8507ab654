"""``layer_norm`` and ``batch_norm``, each one fused op with an analytic backward."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.amp.cast import autocast_inputs
from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module, is_cuda_array
from dtrain.runtime.dtypes import accumulation_dtype
from dtrain.runtime.kernels import layer_norm as _ln_kernels
from dtrain.runtime.kernels.build import contiguous


def _normalize_backward(grad_xhat: Any, xhat: Any, rstd: Any, axes: tuple) -> Any:
    """d loss / d x for xhat = (x - mean) * rstd, the statistics taken over ``axes``."""
    mean_g = grad_xhat.mean(axis=axes, keepdims=True)
    mean_gx = (grad_xhat * xhat).mean(axis=axes, keepdims=True)
    return rstd * (grad_xhat - mean_g - xhat * mean_gx)


class LayerNorm(Op):
    """LayerNorm over the trailing ``dims`` dims. cupy input of a float dtype shared with the
    weight and bias takes the fused CUDA kernels (``dtrain.runtime.kernels.layer_norm``),
    which keep the input and per-row mean and rstd for backward (hence ``reads_inputs``)."""

    reads_inputs = True
    adds_pending = True  # a residual stream's gradient, added in the same kernel
    fused = False

    def forward(
        self, x: Any, weight: Any = None, bias: Any = None, *, dims: int, eps: float
    ) -> Any:
        self.dtype = x.dtype
        if is_cuda_array(x) and x.size and _ln_kernels.supported(x, weight, bias, dims):
            # x, the weight and the bias go to the kernel as they are: no reshapes (each a
            # view, host time on CUDA), the output made in x's shape.
            self.fused, self.x, self.w, self.dims = True, contiguous(x), weight, dims
            out, self.stats = _ln_kernels.layer_norm_forward(self.x, weight, bias, eps, dims)
            return out
        xp = get_array_module(x)
        self.axes = tuple(range(x.ndim - dims, x.ndim))
        # float16 is normalised in float32 and the output rounded once, as PyTorch's CPU
        # kernel does (squares of values over 256 overflow float16).
        wide = x.astype(accumulation_dtype(x.dtype), copy=False)
        centred = wide - wide.mean(axis=self.axes, keepdims=True)
        var = (centred * centred).mean(axis=self.axes, keepdims=True)
        self.rstd = 1 / xp.sqrt(var + eps)
        self.xhat = centred * self.rstd
        self.weight = weight
        out = self.xhat if weight is None else self.xhat * weight
        out = out if bias is None else out + bias
        return out.astype(x.dtype, copy=False)

    def backward(self, grad: Any) -> tuple:
        return self._backward(grad, None)

    def backward_adding(self, grad: Any, pending: tuple) -> tuple[tuple, tuple]:
        """The input's gradient with its pending one added: by the fused kernel on CUDA (no
        launch of its own), into the new gradient in place on the CPU."""
        found = pending[0]
        if found is None or not self.needs_input_grad[0]:
            return self._backward(grad, None), (False,) * len(pending)
        addend = found[0]
        if addend.dtype != self.dtype or addend.shape != grad.shape:
            return self._backward(grad, None), (False,) * len(pending)
        return self._backward(grad, addend), (True,) + (False,) * (len(pending) - 1)

    def _backward(self, grad: Any, addend: Any) -> tuple:
        needs = self.needs_input_grad
        if self.fused:
            wants_w = len(needs) > 1 and needs[1]
            wants_b = len(needs) > 2 and needs[2]
            grad_x, grad_w, grad_b = _ln_kernels.layer_norm_backward(
                grad,
                self.x,
                self.w,
                self.stats,
                dims=self.dims,
                param_grads=wants_w or wants_b,
                addend=addend,
            )
            return (
                grad_x if needs[0] else None,
                grad_w if wants_w else None,
                grad_b if wants_b else None,
            )
        weight = self.weight
        lead = tuple(range(grad.ndim - len(self.axes)))
        grad_x = grad_w = grad_b = None
        wide = grad.astype(self.xhat.dtype, copy=False)  # float32 for float16, as forward
        if needs[0]:
            grad_xhat = wide if weight is None else wide * weight
            grad_x = _normalize_backward(grad_xhat, self.xhat, self.rstd, self.axes)
            grad_x = grad_x.astype(self.dtype, copy=False)
            if addend is not None:
                grad_x += addend  # a new array: no second one for the sum
        if len(needs) > 1 and needs[1]:
            grad_w = (wide * self.xhat).sum(axis=lead).astype(weight.dtype, copy=False)
        if len(needs) > 2 and needs[2]:
            grad_b = wide.sum(axis=lead).astype(grad.dtype, copy=False)
        return grad_x, grad_w, grad_b


def _prod(shape: tuple) -> int:
    size = 1
    for n in shape:
        size *= n
    return size


def layer_norm(
    input: Tensor,
    normalized_shape: Any,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise over the trailing ``normalized_shape`` dims, then scale and shift."""
    input, weight, bias = autocast_inputs("float32", input, weight, bias)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if input.shape[input.ndim - len(shape) :] != shape:
        raise ValueError(
            f"layer_norm: normalized_shape {shape} does not match the trailing dims of the "
            f"input's shape {input.shape}"
        )
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and param.shape != shape:
            raise ValueError(f"layer_norm: {name} has shape {param.shape}, expected {shape}")
    if bias is not None:
        return LayerNorm.apply(input, weight, bias, dims=len(shape), eps=eps)
    if weight is not None:
        return LayerNorm.apply(input, weight, dims=len(shape), eps=eps)
    return LayerNorm.apply(input, dims=len(shape), eps=eps)


class BatchNorm(Op):
    def forward(
        self,
        x: Any,
        weight: Any,
        bias: Any,
        mean: Any,
        var: Any,
        *,
        eps: float,
        batch_stats: bool,
    ) -> Any:
        xp = get_array_module(x)
        self.axes = (0, *range(2, x.ndim))
        self.batch_stats = batch_stats
        # As PyTorch: 1 / std from the (float32, for float16) variance, which float16 may
        # not hold, then the mean and it rounded to the input's dtype.
        wide = accumulation_dtype(x.dtype)
        self.rstd = (1 / xp.sqrt(var.astype(wide, copy=False) + eps)).astype(x.dtype, copy=False)
        self.xhat = (x - mean.astype(x.dtype, copy=False)) * self.rstd
        self.weight = weight
        out = self.xhat if weight is None else self.xhat * weight
        return out if bias is None else out + bias

    def backward(self, grad: Any) -> tuple:
        needs = self.needs_input_grad
        weight = self.weight
        grad_x = grad_w = grad_b = None
        if needs[0]:
            grad_xhat = grad if weight is None else grad * weight
            if self.batch_stats:
                grad_x = _normalize_backward(grad_xhat, self.xhat, self.rstd, self.axes)
            else:  # running statistics are constants
                grad_x = grad_xhat * self.rstd
        if needs[1]:
            grad_w = (grad * self.xhat).sum(axis=self.axes, keepdims=True)
        if needs[2]:
            grad_b = grad.sum(axis=self.axes, keepdims=True)
        return grad_x, grad_w, grad_b, None, None


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise each channel (dim 1) by batch statistics (training) or running ones.

    In training, the running statistics are updated in place: ``running = (1 - momentum) *
    running + momentum * batch`` with the unbiased batch variance, as PyTorch does.
    """
    input, weight, bias = autocast_inputs("float32", input, weight, bias)
    if input.ndim < 2:
        raise ValueError(f"batch_norm: input needs at least 2 dims (N, C, ...), got {input.shape}")
    channels = input.shape[1]
    for name, tensor in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ):
        if tensor is not None and tensor.shape != (channels,):
            raise ValueError(
                f"batch_norm: {name} has shape {tensor.shape} but the input {input.shape} has "
                f"{channels} channels in dim 1; expected shape ({channels},)"
            )
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: pass both running_mean and running_var, or neither")
    array = input._array
    axes = (0, *range(2, input.ndim))
    stat_shape = (1, channels) + (1,) * (input.ndim - 2)
    if training or running_mean is None:
        count = array.size // channels
        if training and count <= 1:
            raise ValueError(
                f"batch_norm: expected more than 1 value per channel when training, got input "
                f"of shape {input.shape}; use a bigger batch or eval()"
            )
        # float16 statistics accumulate in float32, as PyTorch's CPU kernel does; they are
        # rounded to float16 once, in BatchNorm and in the running statistics.
        wide = accumulation_dtype(array.dtype)
        mean = array.mean(axis=axes, keepdims=True, dtype=wide)
        var = array.var(axis=axes, keepdims=True, dtype=wide)
        if training and running_mean is not None:
            with no_grad():
                step = (mean.reshape(channels) * momentum).astype(running_mean.dtype)
                running_mean.mul_(1 - momentum).add_(Tensor(step))
                unbiased = var.reshape(channels) * (count / max(count - 1, 1))
                step = (unbiased * momentum).astype(running_var.dtype)
                running_var.mul_(1 - momentum).add_(Tensor(step))
        batch_stats = True
    else:
        mean = running_mean._array.reshape(stat_shape)
        var = running_var._array.reshape(stat_shape)
        batch_stats = False
    w = None if weight is None else weight.reshape(stat_shape)
    b = None if bias is None else bias.reshape(stat_shape)
    return BatchNorm.apply(input, w, b, mean, var, eps=eps, batch_stats=batch_stats)


def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise ``(N, C, ...)`` input over each group of ``C / num_groups`` channels (and
    every spatial position), then scale and shift per channel: ``layer_norm`` of the
    ``(N, num_groups, -1)`` view.

    Raises:
        ValueError: fewer than 2 dims, or ``C`` not divisible by ``num_groups``.
    """
    if input.ndim < 2:
        raise ValueError(
            f"group_norm: expected input of shape (N, C, ...), got {tuple(input.shape)}"
        )
    channels = input.shape[1]
    if num_groups < 1 or channels % num_groups:
        raise ValueError(
            "Expected number of channels in input to be divisible by num_groups, but got "
            f"input of shape {list(input.shape)} and num_groups={num_groups}"
        )
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and tuple(param.shape) != (channels,):
            raise ValueError(
                f"group_norm: {name} has shape {tuple(param.shape)}, expected ({channels},)"
            )
    grouped = input.reshape(
        input.shape[0], num_groups, channels // num_groups * _prod(input.shape[2:])
    )
    out = layer_norm(grouped, grouped.shape[-1], eps=eps).reshape(input.shape)
    per_channel = (channels,) + (1,) * (input.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(per_channel)
    if bias is not None:
        out = out + bias.reshape(per_channel)
    return out
