"""``dtrain.nn.functional``: activations as functions (layers' functional forms to come)."""

from dtrain._tensor.functions import (
    gelu,
    log_softmax,
    relu,
    sigmoid,
    silu,
    softmax,
    softplus,
    tanh,
)

__all__ = ["gelu", "log_softmax", "relu", "sigmoid", "silu", "softmax", "softplus", "tanh"]
