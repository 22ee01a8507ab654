"""``dtrain.nn.utils``: gradient clipping, parameter/vector conversion, ``weight_norm`` and
``rnn`` (padding variable-length sequences)."""

from dtrain._tensor.nn.utils import (
    clip_grad_norm_,
    clip_grad_value_,
    parameters_to_vector,
    vector_to_parameters,
)
from dtrain._tensor.nn.weight_norm import remove_weight_norm, weight_norm
from dtrain.nn.utils import rnn

__all__ = [
    "clip_grad_norm_",
    "clip_grad_value_",
    "parameters_to_vector",
    "remove_weight_norm",
    "rnn",
    "vector_to_parameters",
    "weight_norm",
]
