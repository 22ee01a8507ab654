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
from dtrain._tensor.nn.functional.activation_extra import (
    alpha_dropout,
    celu,
    celu_,
    dropout3d,
    elu_,
    feature_alpha_dropout,
    hardshrink,
    hardtanh_,
    leaky_relu_,
    relu_,
    rrelu,
    rrelu_,
    selu,
    selu_,
    softshrink,
    softsign,
    tanhshrink,
    threshold,
    threshold_,
)
from dtrain._tensor.nn.functional.attention import scaled_dot_product_attention
from dtrain._tensor.nn.functional.conv import conv2d
from dtrain._tensor.nn.functional.conv_nd import conv3d, conv_transpose3d
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
from dtrain._tensor.nn.functional.embedding_bag import embedding_bag
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
from dtrain._tensor.nn.functional.loss_ctc import ctc_loss
from dtrain._tensor.nn.functional.loss_likelihood import (
    gaussian_nll_loss,
    poisson_nll_loss,
)
from dtrain._tensor.nn.functional.loss_margin import (
    cosine_embedding_loss,
    hinge_embedding_loss,
    margin_ranking_loss,
    multi_margin_loss,
    multilabel_margin_loss,
    multilabel_soft_margin_loss,
    soft_margin_loss,
    triplet_margin_loss,
    triplet_margin_with_distance_loss,
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
from dtrain._tensor.nn.functional.pooling3d import (
    adaptive_avg_pool3d,
    adaptive_max_pool3d,
    avg_pool3d,
    max_pool3d,
)
from dtrain._tensor.nn.functional.pooling_adaptive import (
    adaptive_avg_pool1d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
)
from dtrain._tensor.nn.functional.pooling_lp import (
    lp_pool1d,
    lp_pool2d,
)
from dtrain._tensor.nn.functional.unpool import max_unpool1d, max_unpool2d, max_unpool3d
from dtrain._tensor.nn.functional.vision import (
    channel_shuffle,
    pixel_shuffle,
    pixel_unshuffle,
)

__all__ = [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "affine_grid",
    "alpha_dropout",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "batch_norm",
    "bilinear",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "celu",
    "celu_",
    "channel_shuffle",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "cosine_embedding_loss",
    "cosine_similarity",
    "cross_entropy",
    "ctc_loss",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "elu",
    "elu_",
    "embedding",
    "embedding_bag",
    "feature_alpha_dropout",
    "fold",
    "gaussian_nll_loss",
    "gelu",
    "glu",
    "grid_sample",
    "group_norm",
    "gumbel_softmax",
    "hardshrink",
    "hardsigmoid",
    "hardswish",
    "hardtanh",
    "hardtanh_",
    "hinge_embedding_loss",
    "huber_loss",
    "instance_norm",
    "interpolate",
    "kl_div",
    "l1_loss",
    "layer_norm",
    "leaky_relu",
    "leaky_relu_",
    "linear",
    "local_response_norm",
    "log_softmax",
    "logsigmoid",
    "lp_pool1d",
    "lp_pool2d",
    "margin_ranking_loss",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_unpool1d",
    "max_unpool2d",
    "max_unpool3d",
    "mish",
    "mse_loss",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "nll_loss",
    "normalize",
    "one_hot",
    "pad",
    "pairwise_distance",
    "pixel_shuffle",
    "pixel_unshuffle",
    "poisson_nll_loss",
    "prelu",
    "relu",
    "relu6",
    "relu_",
    "rms_norm",
    "rrelu",
    "rrelu_",
    "scaled_dot_product_attention",
    "selu",
    "selu_",
    "sigmoid",
    "silu",
    "smooth_l1_loss",
    "soft_margin_loss",
    "softmax",
    "softmin",
    "softplus",
    "softshrink",
    "softsign",
    "tanh",
    "tanhshrink",
    "threshold",
    "threshold_",
    "triplet_margin_loss",
    "triplet_margin_with_distance_loss",
    "unfold",
]
