"""Creating tensors: from data, filled, ranges and random samples, as PyTorch names them.

One module a family: ``creation_data`` (from data), ``creation_filled`` (filled and ranges)
and ``creation_random`` (random samples); this module gathers them, and the rest of dtrain
imports them from here.
"""

from __future__ import annotations

from dtrain._tensor.creation_data import (
    as_tensor,
    from_numpy,
    tensor,
)
from dtrain._tensor.creation_filled import (
    arange,
    empty,
    empty_like,
    eye,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    size_argument,
    zeros,
    zeros_like,
)
from dtrain._tensor.creation_random import (
    bernoulli,
    bernoulli_,
    exponential_,
    multinomial,
    normal_,
    rand,
    rand_like,
    randint,
    randint_like,
    randn,
    randn_like,
    randperm,
    sample,
    uniform_,
)
from dtrain.runtime.backend import get_array_module

__all__ = [
    "arange",
    "bernoulli",
    "bernoulli_",
    "exponential_",
    "as_tensor",
    "empty",
    "empty_like",
    "eye",
    "from_numpy",
    "full",
    "full_like",
    "get_array_module",
    "linspace",
    "multinomial",
    "normal_",
    "ones",
    "ones_like",
    "rand",
    "rand_like",
    "randint",
    "randint_like",
    "randn",
    "randn_like",
    "randperm",
    "sample",
    "size_argument",
    "tensor",
    "uniform_",
    "zeros",
    "zeros_like",
]
