"""``dtrain.nn``: Module, Parameter, layers, losses, ``init``, ``utils`` and ``functional``."""

from dtrain._tensor.nn import init, utils
from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.modules.activation import (
    GELU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from dtrain._tensor.nn.modules.attention import MultiheadAttention
from dtrain._tensor.nn.modules.container import ModuleDict, ModuleList, Sequential
from dtrain._tensor.nn.modules.conv import Conv2d
from dtrain._tensor.nn.modules.linear import Flatten, Identity, Linear, Unflatten
from dtrain._tensor.nn.modules.loss import (
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
)
from dtrain._tensor.nn.modules.normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from dtrain._tensor.nn.modules.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from dtrain._tensor.nn.modules.sparse import Dropout, Embedding
from dtrain._tensor.parameter import Parameter
from dtrain.nn import functional

__all__ = [
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "Conv2d",
    "MaxPool2d",
    "GELU",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "CrossEntropyLoss",
    "Dropout",
    "Embedding",
    "Flatten",
    "Identity",
    "L1Loss",
    "LayerNorm",
    "Linear",
    "LogSoftmax",
    "MSELoss",
    "Module",
    "ModuleDict",
    "ModuleList",
    "MultiheadAttention",
    "NLLLoss",
    "Parameter",
    "ReLU",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
    "Unflatten",
    "functional",
    "init",
    "utils",
]
