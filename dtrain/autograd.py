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
from dtrain._tensor.settings import detect_anomaly, is_anomaly_enabled, set_detect_anomaly

__all__ = [
    "Function",
    "FunctionCtx",
    "GradcheckError",
    "Variable",
    "backward",
    "detect_anomaly",
    "enable_grad",
    "grad",
    "gradcheck",
    "inference_mode",
    "is_anomaly_enabled",
    "is_grad_enabled",
    "is_inference_mode_enabled",
    "no_grad",
    "once_differentiable",
    "set_detect_anomaly",
    "set_grad_enabled",
]
