"""Reverse-mode autograd: the op base, the engine, grad modes and the public API."""

from dtrain._tensor.autograd.api import (
    RemovableHandle,
    backward,
    grad,
    register_hook,
    register_post_accumulate_grad_hook,
    retain_grad,
)
from dtrain._tensor.autograd.function import Function, FunctionCtx, once_differentiable
from dtrain._tensor.autograd.grad_mode import (
    enable_grad,
    inference_mode,
    is_grad_enabled,
    is_inference_mode_enabled,
    no_grad,
    set_grad_enabled,
)
from dtrain._tensor.autograd.gradcheck import GradcheckError, gradcheck
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.autograd.variable import Variable

__all__ = [
    "Function",
    "FunctionCtx",
    "GradcheckError",
    "Op",
    "RemovableHandle",
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
    "register_hook",
    "register_post_accumulate_grad_hook",
    "retain_grad",
    "set_grad_enabled",
]
