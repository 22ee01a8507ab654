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
from dtrain._tensor.nn.functional.activation import (
    elu,
    glu,
    gumbel_softmax,
    hardsigmoid,
    hardswish,
    hardtanh,
    leaky_relu,
    logsigmoid,
    mish,
    prelu,
    relu6,
    softmin,
)
from dtrain._tensor.nn.functional.attention import scaled_dot_product_attention
from dtrain._tensor.nn.functional.conv import conv2d
from dtrain._tensor.nn.functional.conv_pool1d import avg_pool1d, conv1d, max_pool1d
from dtrain._tensor.nn.functional.conv_transpose import (
    conv_transpose1d,
    conv_transpose2d,
    fold,
    unfold,
)
from dtrain._tensor.nn.functional.distance import (
    cosine_similarity,
    normalize,
    pairwise_distance,
)
from dtrain._tensor.nn.functional.dropout import dropout, dropout1d, dropout2d
from dtrain._tensor.nn.functional.embedding import embedding, one_hot
from dtrain._tensor.nn.functional.grid_sample import affine_grid, grid_sample
from dtrain._tensor.nn.functional.interpolate import interpolate
from dtrain._tensor.nn.functional.linear import (
    bilinear,
    linear,
)
from dtrain._tensor.nn.functional.loss import (
    binary_cross_entropy_with_logits,
    cross_entropy,
    l1_loss,
    mse_loss,
    nll_loss,
)
from dtrain._tensor.nn.functional.loss_pointwise import (
    binary_cross_entropy,
    huber_loss,
    kl_div,
    smooth_l1_loss,
)
from dtrain._tensor.nn.functional.normalization import batch_norm, group_norm, layer_norm
from dtrain._tensor.nn.functional.normalization_extra import (
    instance_norm,
    local_response_norm,
    rms_norm,
)
from dtrain._tensor.nn.functional.padding import pad
from dtrain._tensor.nn.functional.pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from dtrain._tensor.nn.functional.pooling_adaptive import (
    adaptive_avg_pool1d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
)
from dtrain._tensor.nn.functional.vision import (
    pixel_shuffle,
    pixel_unshuffle,
)

__all__ = [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "affine_grid",
    "avg_pool1d",
    "avg_pool2d",
    "batch_norm",
    "bilinear",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "conv1d",
    "conv2d",
    "conv_transpose1d",
    "conv_transpose2d",
    "cosine_similarity",
    "cross_entropy",
    "dropout",
    "dropout1d",
    "dropout2d",
    "elu",
    "embedding",
    "fold",
    "gelu",
    "glu",
    "grid_sample",
    "group_norm",
    "gumbel_softmax",
    "hardsigmoid",
    "hardswish",
    "hardtanh",
    "huber_loss",
    "instance_norm",
    "interpolate",
    "kl_div",
    "l1_loss",
    "layer_norm",
    "leaky_relu",
    "linear",
    "local_response_norm",
    "log_softmax",
    "logsigmoid",
    "max_pool1d",
    "max_pool2d",
    "mish",
    "mse_loss",
    "nll_loss",
    "normalize",
    "one_hot",
    "pad",
    "pairwise_distance",
    "pixel_shuffle",
    "pixel_unshuffle",
    "prelu",
    "relu",
    "relu6",
    "rms_norm",
    "scaled_dot_product_attention",
    "sigmoid",
    "silu",
    "smooth_l1_loss",
    "softmax",
    "softmin",
    "softplus",
    "tanh",
    "unfold",
]
