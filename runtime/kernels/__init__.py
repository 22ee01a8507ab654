"""Fused CUDA kernels (cupy RawModule), each with a numpy reference.

Importing this package registers every kernel source (``build.sources()``); nothing is
compiled, and cupy is not imported, until a kernel is first launched. See docs/kernels.md.
"""

from dtrain.runtime.kernels.adam import adam_multi_tensor, adam_reference
from dtrain.runtime.kernels.attention import (
    attention_backward,
    attention_backward_reference,
    attention_forward,
    attention_forward_reference,
)
from dtrain.runtime.kernels.bucket import scale_, scale_cast, scale_reference
from dtrain.runtime.kernels.build import KernelSource, sources
from dtrain.runtime.kernels.cast import cast_multi_tensor, cast_reference
from dtrain.runtime.kernels.cross_entropy import (
    cross_entropy_backward,
    cross_entropy_backward_reference,
    cross_entropy_forward,
    cross_entropy_forward_reference,
    cross_entropy_mean,
    cross_entropy_mean_reference,
)
from dtrain.runtime.kernels.embedding import embedding_backward, embedding_backward_reference
from dtrain.runtime.kernels.gelu import (
    gelu_backward,
    gelu_backward_reference,
    gelu_forward,
    gelu_forward_reference,
)
from dtrain.runtime.kernels.grad_norm import clip_, clip_reference, sum_squares_
from dtrain.runtime.kernels.layer_norm import (
    layer_norm_backward,
    layer_norm_backward_reference,
    layer_norm_forward,
    layer_norm_forward_reference,
)
from dtrain.runtime.kernels.relu import relu_backward, relu_backward_reference
from dtrain.runtime.kernels.sgd import sgd_multi_tensor, sgd_reference
from dtrain.runtime.kernels.softmax import (
    scaled_softmax_backward,
    scaled_softmax_backward_reference,
    scaled_softmax_forward,
    scaled_softmax_forward_reference,
)
from dtrain.runtime.kernels.tile import tile_, tile_reference
from dtrain.runtime.kernels.unscale import unscale_, unscale_reference

__all__ = [
    "KernelSource",
    "adam_multi_tensor",
    "adam_reference",
    "attention_backward",
    "attention_backward_reference",
    "attention_forward",
    "attention_forward_reference",
    "cast_multi_tensor",
    "cast_reference",
    "clip_",
    "clip_reference",
    "cross_entropy_backward",
    "cross_entropy_backward_reference",
    "cross_entropy_forward",
    "embedding_backward",
    "embedding_backward_reference",
    "cross_entropy_forward_reference",
    "cross_entropy_mean",
    "cross_entropy_mean_reference",
    "gelu_backward",
    "gelu_backward_reference",
    "gelu_forward",
    "gelu_forward_reference",
    "layer_norm_backward",
    "layer_norm_backward_reference",
    "layer_norm_forward",
    "layer_norm_forward_reference",
    "relu_backward",
    "relu_backward_reference",
    "scale_",
    "scale_cast",
    "scale_reference",
    "sgd_multi_tensor",
    "scaled_softmax_backward",
    "scaled_softmax_backward_reference",
    "scaled_softmax_forward",
    "scaled_softmax_forward_reference",
    "sgd_reference",
    "sources",
    "sum_squares_",
    "tile_",
    "tile_reference",
    "unscale_",
    "unscale_reference",
]
