"""``scaled_dot_product_attention``: softmax(q kᵀ / √d + mask) v, built from primitives."""

from __future__ import annotations

import math

from dtrain._tensor.amp.cast import autocast_inputs
from dtrain._tensor.functions import matmul, softmax, where
from dtrain._tensor.nn.functional.dropout import dropout
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module


def causal_mask(length: int, source_length: int, like: Tensor) -> Tensor:
    """Bool mask, True where query i may attend to key j (j ≤ i, aligned top-left)."""
    xp = get_array_module(like._array)
    return wrap(xp.tril(xp.ones((length, source_length), dtype=bool)))


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
    ``is_causal`` masks future keys. As in PyTorch.
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
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = matmul(query, key.mT) * scale
    if is_causal:
        attn_mask = causal_mask(query.shape[-2], key.shape[-2], query)
    if attn_mask is not None:
        if attn_mask.dtype.kind == "b":
            scores = where(attn_mask, scores, float("-inf"))
        else:
            scores = scores + attn_mask
    weights = softmax(scores, -1)
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p, training=True)
    return matmul(weights, value)
