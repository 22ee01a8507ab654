"""``dtrain.autograd``: gradients on demand, user-defined Functions, grad modes."""

from dtrain._tensor.autograd import (
    Function,
    FunctionCtx,
    GradcheckError,
    Variable,
    backward,
    enable_grad,
    grad,
    gradcheck,
    inference_mode,
    is_grad_enabled,
    is_inference_mode_enabled,
    no_grad,
    once_differentiable,
    set_grad_enabled,
)

__all__ = [
    "Function",
    "FunctionCtx",
    "GradcheckError",
    "Variable",
    "backward",
    "enable_grad",
    "grad",
    "gradcheck",
    "inference_mode",
    "is_grad_enabled",
    "is_inference_mode_enabled",
    "no_grad",
    "once_differentiable",
    "set_grad_enabled",
]
