"""MultiheadAttention, on top of ``F.scaled_dot_product_attention``."""

from __future__ import annotations

import math
from typing import Any

from dtrain._tensor.creation import empty, zeros
from dtrain._tensor.functions import where
from dtrain._tensor.nn import init
from dtrain._tensor.nn.functional.attention import causal_mask, scaled_dot_product_attention
from dtrain._tensor.nn.functional.dropout import dropout
from dtrain._tensor.nn.functional.linear import linear
from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.modules.linear import Linear
from dtrain._tensor.parameter import Parameter
from dtrain._tensor.tensor import Tensor


class MultiheadAttention(Module):
    """Multi-head attention with PyTorch's parameters (``in_proj_weight`` (3E, E),
    ``in_proj_bias``, ``out_proj``) and call signature; keys and values share the
    query's embedding size."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        batch_first: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(
                f"MultiheadAttention: embed_dim {embed_dim} is not divisible by num_heads "
                f"{num_heads}"
            )
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.head_dim, self.batch_first = embed_dim // num_heads, batch_first
        self.in_proj_weight = Parameter(empty(3 * embed_dim, embed_dim, device=device, dtype=dtype))
        if bias:
            self.in_proj_bias = Parameter(zeros(3 * embed_dim, device=device, dtype=dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, device=device, dtype=dtype)
        init.xavier_uniform_(self.in_proj_weight)
        if bias:
            init.zeros_(self.out_proj.bias)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        if not self.batch_first:  # (L, N, E) → (N, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, length, embed = query.shape
        if embed != self.embed_dim:
            raise ValueError(
                f"MultiheadAttention: query has embedding size {embed}, expected {self.embed_dim}"
            )
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q, k, v = (
            self._heads(linear(x, w, b))
            for x, w, b in ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v))
        )
        source = k.shape[2]
        mask = self._combined_mask(attn_mask, key_padding_mask, is_causal, length, source, q)
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            scores = (q @ k.mT) * (1.0 / math.sqrt(self.head_dim))
            if mask is not None:
                scores = (
                    where(mask, scores, float("-inf")) if mask.dtype.kind == "b" else scores + mask
                )
            weights = scores.softmax(-1)
            attended = dropout(weights, dropout_p, training=True) @ v
        else:
            attended = scaled_dot_product_attention(q, k, v, mask, dropout_p)
            weights = None
        out = self.out_proj(attended.transpose(1, 2).reshape(batch, length, embed))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if weights is not None and average_attn_weights:
            weights = weights.mean(1)
        return out, weights

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def _combined_mask(
        self,
        attn_mask: Tensor | None,
        key_padding_mask: Tensor | None,
        is_causal: bool,
        length: int,
        source: int,
        like: Tensor,
    ) -> Tensor | None:
        """One mask broadcastable to (N, H, L, S): bool True = attend, or float to add."""
        mask = attn_mask
        if is_causal and mask is None:
            mask = causal_mask(length, source, like)
        if mask is not None and mask.dtype.kind == "b":
            mask = mask if mask.ndim == 2 else mask.reshape(-1, self.num_heads, length, source)
            # PyTorch's attn_mask uses True for "masked out": flip to "takes part".
            mask = ~mask if attn_mask is not None else mask
        elif mask is not None and mask.ndim == 3:
            mask = mask.reshape(-1, self.num_heads, length, source)
        if key_padding_mask is not None:
            pad = key_padding_mask
            if pad.dtype.kind == "b":
                keep = (~pad).reshape(pad.shape[0], 1, 1, source)
                if mask is None:
                    return keep
                if mask.dtype.kind == "b":
                    return mask & keep
                return where(keep, mask, float("-inf"))
            pad = pad.reshape(pad.shape[0], 1, 1, source)
            mask = (
                pad
                if mask is None
                else (
                    where(mask, 0.0, float("-inf")) + pad if mask.dtype.kind == "b" else mask + pad
                )
            )
        return mask
