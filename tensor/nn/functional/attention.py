"""``scaled_dot_product_attention``: softmax(q kᵀ / √d + mask) v.

On CUDA, short sequences without an explicit mask or dropout run as one op, ``Attention``:
one kernel forward and two backward, reading the heads where they lie
(``runtime/kernels/attention.py``). Otherwise, without an explicit mask (causal or not), the
scale, the causal mask and the softmax are one op, ``ScaledSoftmax``, one kernel each way on
CUDA, between the matrix products; an explicit mask takes the composed path, whose softmax,
``SafeSoftmax``, gives the rows that the mask leaves no key a zero output and gradient, as
PyTorch's ``_safe_softmax`` does. Only an explicit mask can leave a row no key: a causal
mask (top-left aligned) always lets query ``i`` see key 0, so the fused paths need no such
care.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.amp.cast import autocast_inputs
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.functions import matmul, where
from dtrain._tensor.nn.functional.dropout import dropout
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module, is_cuda_array
from dtrain.runtime.kernels import attention as _attention_kernels
from dtrain.runtime.kernels import softmax as _softmax_kernels


class Attention(Op):
    """``softmax(scale * q kᵀ) v`` over (b, h, l, d) CUDA operands, causal or not, fused.
    Backward reads the output (``D = dy · y``), so an in-place change to it is refused."""

    reads_inputs = True
    reads_output = True

    def forward(self, q: Any, k: Any, v: Any, *, scale: float, causal: bool) -> Any:
        self.q, self.k, self.v, self.scale, self.causal = q, k, v, scale, causal
        out, self.saved = _attention_kernels.attention_forward(q, k, v, scale, causal)
        return out

    def backward(self, grad: Any) -> tuple:
        return _attention_kernels.attention_backward(
            grad, self.q, self.k, self.v, self.saved, self.scale, self.causal
        )


class ScaledSoftmax(Op):
    """``softmax(scale * scores)`` over the last dim of (..., L, S) scores, with query ``i``
    seeing keys ``j <= i`` only when ``causal``: the middle of attention as one op."""

    reads_output = True
    fused = False

    def forward(self, scores: Any, *, scale: float, causal: bool) -> Any:
        self.scale = scale
        length, keys = scores.shape[-2:]
        if is_cuda_array(scores) and scores.size:
            rows = scores.reshape(-1, keys)
            if _softmax_kernels.supported(rows):
                self.fused = True
                out = _softmax_kernels.scaled_softmax_forward(rows, scale, length if causal else 0)
                self.out = out.reshape(scores.shape)
                return self.out
        xp = get_array_module(scores)
        z = scores * scale
        if causal:
            z = xp.where(xp.tri(length, keys, dtype=bool), z, -math.inf)
        z -= z.max(axis=-1, keepdims=True)
        xp.exp(z, out=z)
        z /= z.sum(axis=-1, keepdims=True)
        self.out = z
        return z

    def backward(self, grad: Any) -> tuple:
        out = self.out
        if self.fused:
            keys = out.shape[-1]
            rows = _softmax_kernels.scaled_softmax_backward(
                grad.reshape(-1, keys), out.reshape(-1, keys), self.scale
            )
            return (rows.reshape(out.shape),)
        return (out * (grad - (grad * out).sum(axis=-1, keepdims=True)) * self.scale,)


class SafeSoftmax(Op):
    """Softmax over the last dim in which a row of only ``-inf`` (a query the mask leaves no
    key) gives zeros, not NaN; its gradient is then zero too."""

    reads_output = True

    def forward(self, scores: Any) -> Any:
        xp = get_array_module(scores)
        top = scores.max(axis=-1, keepdims=True)
        no_key = top == -math.inf
        z = scores - xp.where(no_key, 0.0, top)  # such a row stays -inf: exp gives 0 ...
        xp.exp(z, out=z)
        total = z.sum(axis=-1, keepdims=True)
        z /= xp.where(no_key, 1.0, total)  # ... and 0 / 1 keeps it 0
        self.out = z
        return z

    def backward(self, grad: Any) -> tuple:
        out = self.out
        return (out * (grad - (grad * out).sum(axis=-1, keepdims=True)),)


def causal_mask(length: int, source_length: int, like: Tensor) -> Tensor:
    """Bool mask, True where query i may attend to key j (j ≤ i, aligned top-left)."""
    xp = get_array_module(like._array)
    return wrap(xp.tril(xp.ones((length, source_length), dtype=bool)))


def _check_mask(attn_mask: Tensor, query_shape: tuple, key_shape: tuple) -> None:
    """A ValueError unless ``attn_mask`` broadcasts to the (..., L, S) scores unchanged."""
    try:
        batch = np.broadcast_shapes(query_shape[:-2], key_shape[:-2])
    except ValueError:
        return  # the matrix product names this mismatch
    scores = (*batch, query_shape[-2], key_shape[-2])
    try:
        fits = np.broadcast_shapes(tuple(attn_mask.shape), scores) == scores
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"scaled_dot_product_attention: attn_mask of shape {tuple(attn_mask.shape)} must "
            f"broadcast to the scores' shape (..., L, S) = {scores}, for query "
            f"{tuple(query_shape)} and key {tuple(key_shape)}"
        )


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """Attention over the last two dims of (..., L, E) queries and (..., S, E) keys/values.

    ``attn_mask`` is a bool mask (True takes part) or a float mask added to the scores;
    ``is_causal`` masks future keys. As in PyTorch (2.5 on), a query that the mask leaves
    no key gets a zero output, and zero gradients.
    """
    query, key, value = autocast_inputs("lower", query, key, value)
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"scaled_dot_product_attention: query dim {query.shape[-1]} != key dim "
            f"{key.shape[-1]} (shapes {query.shape} and {key.shape})"
        )
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"scaled_dot_product_attention: {key.shape[-2]} keys but {value.shape[-2]} values"
        )
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: pass attn_mask or is_causal, not both")
    if attn_mask is not None:
        _check_mask(attn_mask, query.shape, key.shape)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if key.shape[-2] == 0:  # no keys: zeros (as PyTorch), without a softmax over nothing
        return matmul(matmul(query, key.mT), value)
    if (
        attn_mask is None
        and dropout_p == 0.0
        and is_cuda_array(query._array)
        and _attention_kernels.supported(query._array, key._array, value._array)
    ):
        return Attention.apply(query, key, value, scale=float(scale), causal=bool(is_causal))
    # Heads split from one projection are strided views that cuBLAS cannot batch: copied
    # once here, not again by each of the four matrix products of forward and backward.
    query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
    if attn_mask is None:
        (scores,) = autocast_inputs("float32", matmul(query, key.mT))  # as softmax's policy
        weights = ScaledSoftmax.apply(scores, scale=float(scale), causal=is_causal)
    else:
        scores = matmul(query, key.mT) * scale
        if attn_mask.dtype.kind == "b":
            scores = where(attn_mask, scores, float("-inf"))
        else:
            scores = scores + attn_mask
        (scores,) = autocast_inputs("float32", scores)  # as softmax's policy
        weights = SafeSoftmax.apply(scores)
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p, training=True)
    return matmul(weights, value)
