"""``dtrain.nn.utils.parametrize``: a module's tensor computed from others on every access
(PyTorch's ``torch.nn.utils.parametrize``)."""

from dtrain._tensor.nn.parametrize import (
    ParametrizationList,
    cached,
    is_parametrized,
    register_parametrization,
    remove_parametrizations,
    type_before_parametrizations,
)

__all__ = [
    "ParametrizationList",
    "cached",
    "is_parametrized",
    "register_parametrization",
    "remove_parametrizations",
    "type_before_parametrizations",
]
