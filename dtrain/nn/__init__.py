"""``dtrain.nn``: Module, Parameter, layers, losses, ``init``, ``utils`` and ``functional``.

``dtrain.nn.parallel`` (``DistributedDataParallel``) is imported on first use: it brings in
``dtrain.parallel``.
"""

from types import ModuleType

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
from dtrain._tensor.nn.modules.linear import (
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
    LayerNorm,
)
from dtrain._tensor.nn.modules.param_container import (
    ParameterDict,
    ParameterList,
)
from dtrain._tensor.nn.modules.pooling import (
    AdaptiveAvgPool2d,
    AvgPool1d,
    AvgPool2d,
    MaxPool1d,
    MaxPool2d,
)
from dtrain._tensor.nn.modules.sparse import (
    Dropout,
    Dropout1d,
    Dropout2d,
    Embedding,
)
from dtrain._tensor.nn.modules.upsample import (
    Upsample,
)
from dtrain.nn import functional, init, utils
from dtrain.nn.parameter import Parameter


def __getattr__(name: str) -> ModuleType:
    # Only ``parallel``, which loads dtrain.parallel (tens of ms) when first asked for.
    if name == "parallel":
        import dtrain.nn.parallel

        return dtrain.nn.parallel
    raise AttributeError(f"module 'dtrain.nn' has no attribute {name!r}")


__all__ = [
    "AdaptiveAvgPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "BCELoss",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv1d",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "ELU",
    "Embedding",
    "Flatten",
    "GELU",
    "GLU",
    "GroupNorm",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "HuberLoss",
    "Identity",
    "KLDivLoss",
    "L1Loss",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
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
    "Parameter",
    "ParameterDict",
    "ParameterList",
    "ReLU",
    "ReLU6",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "SmoothL1Loss",
    "Softmax",
    "Softmin",
    "Softplus",
    "Tanh",
    "Unflatten",
    "Upsample",
    "functional",
    "init",
    "utils",
]
