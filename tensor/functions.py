"""Every tensor function in one namespace: what ``Tensor``'s methods and ``dtrain`` use."""

from dtrain._tensor.creation import (
    arange,
    as_tensor,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    multinomial,
    normal_,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
    tensor,
    uniform_,
    zeros,
    zeros_like,
)
from dtrain._tensor.format import format_tensor
from dtrain._tensor.ops.activation import gelu, relu, sigmoid, silu, softplus, tanh
from dtrain._tensor.ops.arithmetic import Add, Mul, Neg, Sub, add, binary, div, mul, neg, pow, sub
from dtrain._tensor.ops.compare import (
    allclose,
    bitwise,
    eq,
    equal,
    ge,
    gt,
    isfinite,
    isinf,
    isnan,
    le,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    lt,
    ne,
)
from dtrain._tensor.ops.copy import cast, clone, move
from dtrain._tensor.ops.indexing import (
    chunk,
    gather,
    getitem,
    index_select,
    sort,
    split,
    topk,
)
from dtrain._tensor.ops.inplace import (
    add_,
    clamp_,
    copy_,
    div_,
    fill_,
    mul_,
    setitem,
    sub_,
    zero_,
)
from dtrain._tensor.ops.matmul import matmul
from dtrain._tensor.ops.reduce import (
    amax,
    amin,
    argmax,
    argmin,
    cumsum,
    logsumexp,
    max,
    mean,
    min,
    prod,
    std,
    sum,
    var,
)
from dtrain._tensor.ops.select import clamp, masked_fill, maximum, minimum, where
from dtrain._tensor.ops.shape import (
    cat,
    expand,
    flatten,
    permute,
    repeat,
    reshape,
    squeeze,
    stack,
    transpose,
    tril,
    triu,
    unsqueeze,
    view,
)
from dtrain._tensor.ops.softmax import log_softmax, softmax
from dtrain._tensor.ops.unary import abs, cos, exp, log, log1p, rsqrt, sin, sqrt

__all__ = [
    "Add", "Mul", "Neg", "Sub", "abs", "add", "add_", "allclose", "amax", "amin", "arange",
    "argmax", "argmin", "as_tensor", "binary", "bitwise", "cast", "cat", "chunk", "clamp",
    "clamp_", "clone", "copy_", "cos", "cumsum", "div", "div_", "empty", "empty_like", "eq",
    "equal", "exp", "expand", "eye", "fill_", "flatten", "format_tensor", "from_numpy", "full",
    "full_like", "gather", "ge", "gelu", "getitem", "gt", "index_select", "isfinite", "isinf",
    "isnan", "le", "linspace", "log", "log1p", "log_softmax", "logical_and", "logical_not",
    "logical_or", "logical_xor", "logsumexp", "lt", "masked_fill", "matmul", "max", "maximum",
    "mean", "min", "minimum", "move", "mul", "mul_", "multinomial", "ne", "neg", "normal_",
    "ones", "ones_like", "permute", "pow", "prod", "rand", "rand_like", "randint", "randn",
    "randn_like", "randperm", "relu", "repeat", "reshape", "rsqrt", "setitem", "sigmoid",
    "silu", "sin", "softmax", "softplus", "sort", "split", "sqrt", "squeeze", "stack", "std",
    "sub", "sub_", "sum", "tanh", "tensor", "topk", "transpose", "tril", "triu", "uniform_",
    "unsqueeze", "var", "view", "where", "zero_", "zeros", "zeros_like",
]
