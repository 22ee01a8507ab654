"""``dtrain.linalg``: ``torch.linalg``'s norms, inv, solve, det, slogdet, cross,
matrix_power, cholesky and solve_triangular."""

from dtrain._tensor.ops.linalg import cholesky, solve_triangular
from dtrain._tensor.ops.linalg_small import linalg_cross as cross
from dtrain._tensor.ops.linalg_small import matrix_power, slogdet
from dtrain._tensor.ops.matrix import det, inv, matrix_norm, solve, vector_norm
from dtrain._tensor.ops.matrix import linalg_norm as norm

__all__ = [
    "cholesky",
    "cross",
    "det",
    "inv",
    "matrix_norm",
    "matrix_power",
    "norm",
    "slogdet",
    "solve",
    "solve_triangular",
    "vector_norm",
]
