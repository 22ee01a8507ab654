"""MultiheadAttention, on top of ``F.scaled_dot_product_attention``."""

from __future__ import annotations

import math
from typing import Any

from dtrain._tensor.creation import empty, size_argument, zeros
from dtrain._tensor.functions import where
from dtrain._tensor.nn import init
from dtrain._tensor.nn.functional.attention import causal_mask, scaled_dot_product_attention
from dtrain._tensor.nn.functional.dropout import dropout
from dtrain._tensor.nn.functional.linear import linear
from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.modules.linear import Linear
from dtrain._tensor.parameter import Parameter
from dtrain._tensor.tensor import Tensor


class NonDynamicallyQuantizableLinear(Linear):
    """``MultiheadAttention.out_proj``: a plain Linear under PyTorch's class name, so that
    ``print(model)`` reads the same in both frameworks."""


class MultiheadAttention(Module):
    """Multi-head attention with PyTorch's parameters (``in_proj_weight`` (3E, E),
    ``in_proj_bias``, ``out_proj``) and call signature. Differs from PyTorch: keys and
    values must share the query's embedding size (``kdim = vdim = embed_dim``), and
    ``add_bias_kv`` / ``add_zero_attn`` are not implemented."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        embed_dim = size_argument(embed_dim, "embed_dim", "MultiheadAttention")
        num_heads = size_argument(num_heads, "num_heads", "MultiheadAttention")
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(
                f"MultiheadAttention: embed_dim {embed_dim} must be a positive multiple of "
                f"num_heads {num_heads}"
            )
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError(
                "MultiheadAttention: add_bias_kv and add_zero_attn are not implemented"
            )
        for name, size in (("kdim", kdim), ("vdim", vdim)):
            if size is not None and size != embed_dim:
                raise NotImplementedError(
                    f"MultiheadAttention: {name}={size} differs from embed_dim={embed_dim}; "
                    "only keys and values of the query's size are implemented (project them "
                    "with an nn.Linear first)"
                )
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {dropout}")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.head_dim, self.batch_first = embed_dim // num_heads, batch_first
        self.in_proj_weight = Parameter(empty(3 * embed_dim, embed_dim, device=device, dtype=dtype))
        if bias:
            self.in_proj_bias = Parameter(zeros(3 * embed_dim, device=device, dtype=dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(
            embed_dim, embed_dim, bias=bias, device=device, dtype=dtype
        )
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
        """Attend from ``query`` (L, N, E) to ``key``/``value`` (S, N, E) — (N, L, E) and
        (N, S, E) with ``batch_first``, or (L, E) and (S, E) unbatched. Returns the output
        shaped like ``query`` and, with ``need_weights``, the attention weights (N, L, S)
        (averaged over heads) or (N, H, L, S)."""
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(
                f"MultiheadAttention: query, key and value must all be 3-D (batched) or 2-D "
                f"(unbatched), got shapes {query.shape}, {key.shape} and {value.shape}"
            )
        unbatched = query.ndim == 2
        if unbatched:  # one sequence: add the batch dim where batch_first puts it
            query, key, value = (t.unsqueeze(0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:  # (L, N, E) → (N, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, length, embed = query.shape
        for name, tensor in (("query", query), ("key", key), ("value", value)):
            if tensor.shape[-1] != self.embed_dim:
                raise ValueError(
                    f"MultiheadAttention: {name} has embedding size {tensor.shape[-1]}, "
                    f"expected {self.embed_dim}"
                )
        if key.shape[:2] != value.shape[:2] or key.shape[0] != batch:
            raise ValueError(
                f"MultiheadAttention: key {key.shape} and value {value.shape} must share batch "
                f"and sequence sizes, and the batch size of query {query.shape}"
            )
        self._check_masks(key_padding_mask, attn_mask, batch, length, key.shape[1], unbatched)
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
            # As PyTorch, the weights returned are the ones used: after dropout.
            weights = dropout(scores.softmax(-1), dropout_p, training=True)
            attended = weights @ v
        elif is_causal and attn_mask is None and key_padding_mask is None:
            # The mask is the causal one alone: said so, the fused CUDA attention takes it.
            attended = scaled_dot_product_attention(q, k, v, None, dropout_p, is_causal=True)
            weights = None
        else:
            attended = scaled_dot_product_attention(q, k, v, mask, dropout_p)
            weights = None
        out = self.out_proj(attended.transpose(1, 2).reshape(batch, length, embed))
        if weights is not None and average_attn_weights:
            weights = weights.mean(1)
        if unbatched:
            return out.squeeze(0), None if weights is None else weights.squeeze(0)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def _check_masks(
        self,
        key_padding_mask: Tensor | None,
        attn_mask: Tensor | None,
        batch: int,
        length: int,
        source: int,
        unbatched: bool,
    ) -> None:
        """ValueErrors that name a mask of the wrong shape and the shape it must have."""
        if key_padding_mask is not None and key_padding_mask.shape != (batch, source):
            got = key_padding_mask.shape[1:] if unbatched else key_padding_mask.shape
            expected = "(source_len,)" if unbatched else "(batch, source_len)"
            sizes = (source,) if unbatched else (batch, source)
            raise ValueError(
                f"MultiheadAttention: key_padding_mask has shape {tuple(got)}, expected "
                f"{expected} = {sizes}"
            )
        shapes = ((length, source), (batch * self.num_heads, length, source))
        if attn_mask is not None and attn_mask.shape not in shapes:
            raise ValueError(
                f"MultiheadAttention: attn_mask has shape {tuple(attn_mask.shape)}, expected "
                f"(target_len, source_len) = {shapes[0]} or (batch * num_heads, target_len, "
                f"source_len) = {shapes[1]}"
            )

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
