"""torch's ``torch.distributed.checkpoint.state_dict``: get and set model and optimizer
state dicts of plain, DDP and FSDP models (optimizer state keyed by parameter name)."""

from dtrain.parallel.checkpoint_state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)

__all__ = [
    "StateDictOptions",
    "get_model_state_dict",
    "get_optimizer_state_dict",
    "get_state_dict",
    "set_model_state_dict",
    "set_optimizer_state_dict",
    "set_state_dict",
]
