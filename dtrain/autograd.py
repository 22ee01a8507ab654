"""``dtrain.autograd``: gradients on demand, user-defined Functions, grad modes."""

from dtrain._tensor.autograd import (
    Function,
    FunctionCtx,
    GradcheckError,
    backward,
    enable_grad,
    grad,
    gradcheck,
    is_grad_enabled,
    no_grad,
    once_differentiable,
    set_grad_enabled,
)

__all__ = [
    "Function",
    "FunctionCtx",
    "GradcheckError",
    "backward",
    "enable_grad",
    "grad",
    "gradcheck",
    "is_grad_enabled",
    "no_grad",
    "once_differentiable",
    "set_grad_enabled",
]
