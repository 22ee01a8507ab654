"""``dtrain.nn.utils``: gradient clipping, parameter/vector conversion, ``weight_norm`` and
``spectral_norm`` (hook-based), ``parametrize`` and ``parametrizations`` (the same as
parametrizations), and ``rnn`` (padding variable-length sequences)."""

from dtrain._tensor.nn.spectral_norm import remove_spectral_norm, spectral_norm
from dtrain._tensor.nn.utils import (
    clip_grad_norm_,
    clip_grad_value_,
    parameters_to_vector,
    vector_to_parameters,
)
from dtrain._tensor.nn.weight_norm import remove_weight_norm, weight_norm
from dtrain.nn.utils import parametrizations, parametrize, rnn

__all__ = [
    "clip_grad_norm_",
    "clip_grad_value_",
    "parameters_to_vector",
    "parametrizations",
    "parametrize",
    "remove_spectral_norm",
    "remove_weight_norm",
    "rnn",
    "spectral_norm",
    "vector_to_parameters",
    "weight_norm",
]
