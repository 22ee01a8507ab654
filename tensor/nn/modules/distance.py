"""``CosineSimilarity`` and ``PairwiseDistance``."""

from __future__ import annotations

from dtrain._tensor.nn.functional.distance import cosine_similarity, pairwise_distance
from dtrain._tensor.nn.module import Module
from dtrain._tensor.tensor import Tensor


class CosineSimilarity(Module):
    """Cosine similarity of two inputs along ``dim``; see ``functional.cosine_similarity``."""

    def __init__(self, dim: int = 1, eps: float = 1e-8) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        return cosine_similarity(x1, x2, self.dim, self.eps)


class PairwiseDistance(Module):
    """``p``-norm distance of two inputs along the last dim; see
    ``functional.pairwise_distance``."""

    def __init__(self, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False) -> None:
        super().__init__()
        self.norm, self.eps, self.keepdim = p, eps, keepdim

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        return pairwise_distance(x1, x2, self.norm, self.eps, self.keepdim)
