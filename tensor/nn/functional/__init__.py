"""``nn.functional``: the stateless forms of the layers, losses and activations."""

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
from dtrain._tensor.nn.functional.attention import scaled_dot_product_attention
from dtrain._tensor.nn.functional.conv import conv2d
from dtrain._tensor.nn.functional.dropout import dropout
from dtrain._tensor.nn.functional.embedding import embedding, one_hot
from dtrain._tensor.nn.functional.linear import linear
from dtrain._tensor.nn.functional.loss import (
    binary_cross_entropy_with_logits,
    cross_entropy,
    l1_loss,
    mse_loss,
    nll_loss,
)
from dtrain._tensor.nn.functional.normalization import batch_norm, layer_norm
from dtrain._tensor.nn.functional.padding import pad
from dtrain._tensor.nn.functional.pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d

__all__ = [
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "conv2d",
    "max_pool2d",
    "batch_norm",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "dropout",
    "embedding",
    "gelu",
    "l1_loss",
    "layer_norm",
    "linear",
    "log_softmax",
    "mse_loss",
    "nll_loss",
    "one_hot",
    "pad",
    "relu",
    "scaled_dot_product_attention",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "tanh",
]
