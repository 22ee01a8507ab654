"""dtrain: a distributed data-parallel training runtime with a PyTorch-shaped API.

    import dtrain as dt
    x = dt.tensor([[1., 2.], [3., 4.]], requires_grad=True)
    y = (x @ x.T).relu().sum()
    y.backward()
    x.grad

This package only re-exports; the code lives in ``dtrain._tensor`` (tensor/),
``dtrain.runtime`` (runtime/), ``dtrain.parallel`` (parallel/) and ``dtrain.launch`` (launch/).
"""

__version__ = "0.1.0"

from dtrain import autograd, nn
from dtrain._tensor.autograd import (
    enable_grad,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from dtrain._tensor.functions import (
    abs,
    add,
    allclose,
    amax,
    amin,
    arange,
    argmax,
    argmin,
    as_tensor,
    cat,
    chunk,
    clamp,
    clone,
    cos,
    cumsum,
    div,
    empty,
    empty_like,
    eq,
    equal,
    exp,
    expand,
    eye,
    flatten,
    from_numpy,
    full,
    full_like,
    gather,
    ge,
    gelu,
    gt,
    index_select,
    isfinite,
    isinf,
    isnan,
    le,
    linspace,
    log,
    log1p,
    log_softmax,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    logsumexp,
    lt,
    masked_fill,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    mul,
    multinomial,
    ne,
    neg,
    ones,
    ones_like,
    permute,
    pow,
    prod,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
    relu,
    repeat,
    reshape,
    rsqrt,
    sigmoid,
    silu,
    sin,
    softmax,
    softplus,
    sort,
    split,
    sqrt,
    squeeze,
    stack,
    std,
    sub,
    sum,
    tanh,
    tensor,
    topk,
    transpose,
    tril,
    triu,
    unsqueeze,
    var,
    where,
    zeros,
    zeros_like,
)
from dtrain._tensor.parameter import Parameter
from dtrain._tensor.tensor import Tensor
from dtrain.runtime import Device, Generator, initial_seed, manual_seed
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.dtypes import (
    bool_ as bool,
)
from dtrain.runtime.dtypes import (
    float16,
    float32,
    float64,
    int8,
    int16,
    int32,
    int64,
    uint8,
)

device = Device
half, float, double = float16, float32, float64
short, int, long = int16, int32, int64
clip = clamp


def cuda_is_available() -> bool:
    """True when cupy is installed and sees a CUDA device."""
    from dtrain.runtime.backend import cupy_module

    return cupy_module() is not None


__all__ = [
    "Device", "Generator", "Parameter", "Tensor", "abs", "add", "allclose", "amax", "amin",
    "arange", "argmax", "argmin", "as_tensor", "autograd", "bool", "cat", "chunk", "clamp",
    "clip", "clone", "cos", "cuda_is_available", "cumsum", "device", "div", "double", "empty",
    "empty_like", "enable_grad", "eq", "equal", "exp", "expand", "eye", "flatten", "float",
    "float16", "float32", "float64", "from_numpy", "full", "full_like", "gather", "ge", "gelu",
    "get_array_module", "gt", "half", "index_select", "initial_seed", "int", "int8", "int16",
    "int32", "int64", "is_grad_enabled", "isfinite", "isinf", "isnan", "le", "linspace", "log",
    "log1p", "log_softmax", "logical_and", "logical_not", "logical_or", "logical_xor",
    "logsumexp", "long", "lt", "manual_seed", "masked_fill", "matmul", "max", "maximum", "mean",
    "min", "minimum", "mul", "multinomial", "ne", "neg", "nn", "no_grad", "ones", "ones_like",
    "permute", "pow", "prod", "rand", "rand_like", "randint", "randn", "randn_like", "randperm",
    "relu", "repeat", "reshape", "rsqrt", "set_grad_enabled", "short", "sigmoid", "silu", "sin",
    "softmax", "softplus", "sort", "split", "sqrt", "squeeze", "stack", "std", "sub", "sum",
    "tanh", "tensor", "topk", "transpose", "tril", "triu", "uint8", "unsqueeze", "var", "where",
    "zeros", "zeros_like",
]
