"""``dtrain.distributed.fsdp.wrap``: torch's auto-wrap policies, from
``dtrain.parallel.fsdp_wrap``."""

from dtrain.parallel.fsdp_wrap import (
    ModuleWrapPolicy,
    always_wrap_policy,
    lambda_auto_wrap_policy,
    size_based_auto_wrap_policy,
    transformer_auto_wrap_policy,
)

__all__ = [
    "ModuleWrapPolicy",
    "always_wrap_policy",
    "lambda_auto_wrap_policy",
    "size_based_auto_wrap_policy",
    "transformer_auto_wrap_policy",
]
