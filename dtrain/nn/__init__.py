"""``dtrain.nn``: Module, Parameter, layers, losses, ``init``, ``utils`` and ``functional``.

``dtrain.nn.parallel`` (``DistributedDataParallel``) and ``SyncBatchNorm`` are imported on
first use: they bring in ``dtrain.parallel``.
"""

from typing import Any

from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.modules.activation import (
    ELU,
    GELU,
    GLU,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LeakyReLU,
    LogSigmoid,
    LogSoftmax,
    Mish,
    PReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softmin,
    Softplus,
    Tanh,
)
from dtrain._tensor.nn.modules.attention import (
    MultiheadAttention,
)
from dtrain._tensor.nn.modules.container import (
    ModuleDict,
    ModuleList,
    Sequential,
)
from dtrain._tensor.nn.modules.conv import (
    Conv1d,
    Conv2d,
)
from dtrain._tensor.nn.modules.conv_transpose import (
    ConvTranspose1d,
    ConvTranspose2d,
    Fold,
    Unfold,
)
from dtrain._tensor.nn.modules.data_parallel import (
    DataParallel,
)
from dtrain._tensor.nn.modules.distance import (
    CosineSimilarity,
    PairwiseDistance,
)
from dtrain._tensor.nn.modules.linear import (
    Bilinear,
    Flatten,
    Identity,
    Linear,
    Unflatten,
)
from dtrain._tensor.nn.modules.loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from dtrain._tensor.nn.modules.normalization import (
    BatchNorm1d,
    BatchNorm2d,
    GroupNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    LayerNorm,
    LocalResponseNorm,
    RMSNorm,
)
from dtrain._tensor.nn.modules.padding import (
    ConstantPad1d,
    ConstantPad2d,
    ReflectionPad1d,
    ReflectionPad2d,
    ReplicationPad1d,
    ReplicationPad2d,
    ZeroPad1d,
    ZeroPad2d,
)
from dtrain._tensor.nn.modules.param_container import (
    ParameterDict,
    ParameterList,
)
from dtrain._tensor.nn.modules.pixelshuffle import (
    PixelShuffle,
    PixelUnshuffle,
)
from dtrain._tensor.nn.modules.pooling import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AvgPool1d,
    AvgPool2d,
    MaxPool1d,
    MaxPool2d,
)
from dtrain._tensor.nn.modules.rnn import GRU, LSTM, RNN, RNNBase
from dtrain._tensor.nn.modules.rnn_cells import GRUCell, LSTMCell, RNNCell, RNNCellBase
from dtrain._tensor.nn.modules.sparse import (
    Dropout,
    Dropout1d,
    Dropout2d,
    Embedding,
)
from dtrain._tensor.nn.modules.transformer import (
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from dtrain._tensor.nn.modules.upsample import (
    Upsample,
)
from dtrain.nn import functional, init, utils
from dtrain.nn.parameter import Parameter


def __getattr__(name: str) -> Any:
    # Only ``parallel`` and ``SyncBatchNorm``, which load dtrain.parallel (tens of ms) when
    # first asked for.
    if name == "parallel":
        import dtrain.nn.parallel

        return dtrain.nn.parallel
    if name == "SyncBatchNorm":
        from dtrain.parallel import SyncBatchNorm

        return SyncBatchNorm
    raise AttributeError(f"module 'dtrain.nn' has no attribute {name!r}")


__all__ = [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "BCELoss",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "Bilinear",
    "ConstantPad1d",
    "ConstantPad2d",
    "Conv1d",
    "Conv2d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "CosineSimilarity",
    "CrossEntropyLoss",
    "DataParallel",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "ELU",
    "Embedding",
    "Flatten",
    "Fold",
    "GELU",
    "GLU",
    "GroupNorm",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "HuberLoss",
    "Identity",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "KLDivLoss",
    "L1Loss",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LocalResponseNorm",
    "LogSigmoid",
    "LogSoftmax",
    "MSELoss",
    "MaxPool1d",
    "MaxPool2d",
    "Mish",
    "Module",
    "ModuleDict",
    "ModuleList",
    "MultiheadAttention",
    "NLLLoss",
    "PReLU",
    "PairwiseDistance",
    "Parameter",
    "ParameterDict",
    "ParameterList",
    "PixelShuffle",
    "PixelUnshuffle",
    "RMSNorm",
    "ReLU",
    "ReLU6",
    "ReflectionPad1d",
    "ReflectionPad2d",
    "ReplicationPad1d",
    "ReplicationPad2d",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "SmoothL1Loss",
    "Softmax",
    "Softmin",
    "Softplus",
    "SyncBatchNorm",
    "Tanh",
    "Unflatten",
    "Unfold",
    "Upsample",
    "ZeroPad1d",
    "ZeroPad2d",
    "functional",
    "init",
    "utils",
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "RNN",
    "RNNBase",
    "RNNCell",
    "RNNCellBase",
    "Transformer",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
]
