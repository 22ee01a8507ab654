"""``dtrain.linalg``: ``torch.linalg``'s norms, inv, solve and det."""

from dtrain._tensor.ops.matrix import det, inv, matrix_norm, solve, vector_norm
from dtrain._tensor.ops.matrix import linalg_norm as norm

__all__ = ["det", "inv", "matrix_norm", "norm", "solve", "vector_norm"]
