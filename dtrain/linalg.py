"""``dtrain.linalg``: ``torch.linalg``'s norms, inv, solve, det, cholesky and
solve_triangular."""

from dtrain._tensor.ops.linalg import cholesky, solve_triangular
from dtrain._tensor.ops.matrix import det, inv, matrix_norm, solve, vector_norm
from dtrain._tensor.ops.matrix import linalg_norm as norm

__all__ = [
    "cholesky",
    "det",
    "inv",
    "matrix_norm",
    "norm",
    "solve",
    "solve_triangular",
    "vector_norm",
]
