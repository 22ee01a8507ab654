"""Embedding and Dropout (Dropout1d, Dropout2d): the layers that index or mask."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.creation import empty
from dtrain._tensor.nn import init
from dtrain._tensor.nn.functional.dropout import dropout, dropout1d, dropout2d
from dtrain._tensor.nn.functional.embedding import embedding
from dtrain._tensor.nn.module import Module
from dtrain._tensor.parameter import Parameter
from dtrain._tensor.tensor import Tensor


class Embedding(Module):
    """A table of ``num_embeddings`` vectors of size ``embedding_dim``, initialised N(0, 1);
    the row at ``padding_idx`` starts at zero and gets no gradient."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(
                f"Embedding: padding_idx {padding_idx} must be within [-{num_embeddings}, "
                f"{num_embeddings})"
            )
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = None if padding_idx is None else padding_idx % num_embeddings
        self.weight = Parameter(empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0.0

    def forward(self, input: Tensor) -> Tensor:
        return embedding(input, self.weight, self.padding_idx)

    @classmethod
    def from_pretrained(
        cls,
        embeddings: Tensor,
        freeze: bool = True,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
    ) -> Embedding:
        """An ``Embedding`` whose table is the 2-D ``embeddings`` (sharing its memory), frozen
        (``requires_grad=False``) unless ``freeze=False``; as PyTorch, the ``padding_idx``
        row keeps its values (it only gets no gradient).

        Raises:
            ValueError: ``embeddings`` not 2-D, or ``max_norm``, ``scale_grad_by_freq`` or
                ``sparse`` (not supported).
        """
        if not isinstance(embeddings, Tensor) or embeddings.ndim != 2:
            shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else embeddings
            raise ValueError(
                f"Embedding.from_pretrained: embeddings must be a 2-D tensor, got {shape!r}"
            )
        if max_norm is not None or scale_grad_by_freq or sparse:
            raise ValueError(
                "Embedding.from_pretrained: max_norm, scale_grad_by_freq and sparse are not "
                "supported; leave them at their defaults"
            )
        rows, dim = embeddings.shape
        module = cls(rows, dim, padding_idx, device=embeddings.device, dtype=embeddings.dtype)
        module.weight = Parameter(embeddings.detach(), requires_grad=not freeze)
        return module

    def extra_repr(self) -> str:
        extra = f"{self.num_embeddings}, {self.embedding_dim}"
        return extra if self.padding_idx is None else f"{extra}, padding_idx={self.padding_idx}"


class Dropout(Module):
    """Zero elements with probability ``p`` in training mode; identity in eval mode."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, input: Tensor) -> Tensor:
        return dropout(input, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout1d(Dropout):
    """Zero whole channels of ``(N, C, L)`` input with probability ``p`` in training mode."""

    def forward(self, input: Tensor) -> Tensor:
        return dropout1d(input, self.p, self.training)


class Dropout2d(Dropout):
    """Zero whole channels of ``(N, C, H, W)`` input with probability ``p`` in training mode."""

    def forward(self, input: Tensor) -> Tensor:
        return dropout2d(input, self.p, self.training)
