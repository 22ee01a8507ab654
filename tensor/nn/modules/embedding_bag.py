"""``EmbeddingBag``: an embedding table reduced over bags of indices."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.creation import empty
from dtrain._tensor.nn import init
from dtrain._tensor.nn.functional.embedding_bag import MODES, embedding_bag
from dtrain._tensor.nn.module import Module
from dtrain._tensor.parameter import Parameter
from dtrain._tensor.tensor import Tensor


class EmbeddingBag(Module):
    """Sums, means or maxima of bags of ``embedding_dim`` vectors from a table of
    ``num_embeddings`` (initialised N(0, 1), the ``padding_idx`` row zero); see
    ``functional.embedding_bag``. ``forward(input, offsets=None, per_sample_weights=None)``.

    Raises:
        ValueError: a bad mode or ``padding_idx``, or ``max_norm``, ``scale_grad_by_freq`` or
            ``sparse`` (not supported).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        mode: str = "mean",
        sparse: bool = False,
        _weight: Tensor | None = None,
        include_last_offset: bool = False,
        padding_idx: int | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        where = "EmbeddingBag"
        if max_norm is not None or scale_grad_by_freq or sparse:
            raise ValueError(
                f"{where}: max_norm, scale_grad_by_freq and sparse are not supported; leave "
                "them at their defaults"
            )
        if mode not in MODES:
            raise ValueError(f"{where}: mode must be one of {list(MODES)}, got {mode!r}")
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(
                f"{where}: padding_idx {padding_idx} must be within [-{num_embeddings}, "
                f"{num_embeddings})"
            )
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.max_norm, self.norm_type = max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        self.mode, self.include_last_offset = mode, include_last_offset
        self.padding_idx = None if padding_idx is None else padding_idx % num_embeddings
        if _weight is None:
            self.weight = Parameter(
                empty(num_embeddings, embedding_dim, device=device, dtype=dtype)
            )
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(
                    f"{where}: _weight of shape {tuple(_weight.shape)} must be "
                    f"({num_embeddings}, {embedding_dim})"
                )
            self.weight = Parameter(_weight.detach())

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0.0

    def forward(
        self,
        input: Tensor,
        offsets: Tensor | None = None,
        per_sample_weights: Tensor | None = None,
    ) -> Tensor:
        return embedding_bag(
            input,
            self.weight,
            offsets,
            mode=self.mode,
            per_sample_weights=per_sample_weights,
            include_last_offset=self.include_last_offset,
            padding_idx=self.padding_idx,
        )

    @classmethod
    def from_pretrained(
        cls,
        embeddings: Tensor,
        freeze: bool = True,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        mode: str = "mean",
        sparse: bool = False,
        include_last_offset: bool = False,
        padding_idx: int | None = None,
    ) -> EmbeddingBag:
        """An ``EmbeddingBag`` over the 2-D ``embeddings`` (sharing its memory), frozen
        (``requires_grad=False``) unless ``freeze=False``; the ``padding_idx`` row keeps its
        values, as PyTorch."""
        if not isinstance(embeddings, Tensor) or embeddings.ndim != 2:
            shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else embeddings
            raise ValueError(
                f"EmbeddingBag.from_pretrained: embeddings must be a 2-D tensor, got {shape!r}"
            )
        rows, dim = embeddings.shape
        module = cls(
            rows,
            dim,
            max_norm,
            norm_type,
            scale_grad_by_freq,
            mode,
            sparse,
            embeddings,
            include_last_offset,
            padding_idx,
        )
        module.weight.requires_grad = not freeze
        return module

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}, mode={self.mode!r}"
        return text if self.padding_idx is None else f"{text}, padding_idx={self.padding_idx}"
