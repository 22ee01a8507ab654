"""FSDP's options (``ShardingStrategy``, ``StateDictType`` and the configs, torch's names),
the checks that refuse those dtrain does not support, and its full-parameter views:
``summon_full_params`` and the full state dict (the original module's keys and full
tensors, gathered), and loading one back (sharded again)."""

from __future__ import annotations

import contextlib
import enum
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.module_state_dict import IncompatibleKeys
from dtrain.parallel import api
from dtrain.parallel.fsdp_flat import FLAT_PARAM_NAME

WRAPPED = "_fsdp_wrapped_module"


class ShardingStrategy(enum.Enum):
    """What each rank keeps between steps: ``FULL_SHARD`` and ``SHARD_GRAD_OP`` shard
    parameters, gradients and optimizer state (the same in dtrain: see docs/parallel.md);
    ``NO_SHARD`` keeps everything on every rank and all-reduces gradients, as DDP."""

    FULL_SHARD = enum.auto()
    SHARD_GRAD_OP = enum.auto()
    NO_SHARD = enum.auto()
    HYBRID_SHARD = enum.auto()
    _HYBRID_SHARD_ZERO2 = enum.auto()


class BackwardPrefetch(enum.Enum):
    """Accepted for torch compatibility; dtrain gathers each unit when it runs."""

    BACKWARD_PRE = enum.auto()
    BACKWARD_POST = enum.auto()


class StateDictType(enum.Enum):
    """Which state dict ``state_dict()`` returns; dtrain supports ``FULL_STATE_DICT``."""

    FULL_STATE_DICT = enum.auto()
    LOCAL_STATE_DICT = enum.auto()
    SHARDED_STATE_DICT = enum.auto()


@dataclass
class StateDictConfig:
    """Base of the state dict configs. ``offload_to_cpu``: return CPU tensors."""

    offload_to_cpu: bool = False


@dataclass
class FullStateDictConfig(StateDictConfig):
    """``rank0_only``: only rank 0 gets the state dict (others get an empty dict)."""

    rank0_only: bool = False


@dataclass
class CPUOffload:
    """Accepted for torch compatibility; ``offload_params=True`` is not supported."""

    offload_params: bool = False


@dataclass
class MixedPrecision:
    """Accepted for torch compatibility; only ``MixedPrecision()`` (all None) is supported."""

    param_dtype: Any = None
    reduce_dtype: Any = None
    buffer_dtype: Any = None
    keep_low_precision_grads: bool = False
    cast_forward_inputs: bool = False
    cast_root_forward_inputs: bool = True


NO_OPTIM_STATE = (
    "FullyShardedDataParallel: optimizer state dicts (full_optim_state_dict, "
    "optim_state_dict) are not supported by dtrain; save each rank's optimizer.state_dict() "
    "(it holds that rank's shards) and load it back on the same world size"
)


def check_supported(
    *,
    strategy: Any,
    cpu_offload: Any = None,
    mixed_precision: Any = None,
    ignored_modules: Any = None,
    ignored_states: Any = None,
    param_init_fn: Any = None,
    use_orig_params: bool = False,
    device_mesh: Any = None,
) -> None:
    """Raise NotImplementedError for the constructor options dtrain does not support."""
    if not isinstance(strategy, ShardingStrategy) or strategy.name.startswith(
        ("HYBRID", "_HYBRID")
    ):
        raise NotImplementedError(
            f"FullyShardedDataParallel: sharding_strategy={strategy!r} is not supported; use "
            "ShardingStrategy.FULL_SHARD, SHARD_GRAD_OP or NO_SHARD"
        )
    if cpu_offload is not None and getattr(cpu_offload, "offload_params", False):
        raise NotImplementedError(
            "FullyShardedDataParallel: CPUOffload(offload_params=True) is not supported by "
            "dtrain; pass cpu_offload=None"
        )
    if mixed_precision is not None and any(
        getattr(mixed_precision, f, None) is not None
        for f in ("param_dtype", "reduce_dtype", "buffer_dtype")
    ):
        raise NotImplementedError(
            "FullyShardedDataParallel: a MixedPrecision policy is not supported by dtrain; "
            "pass mixed_precision=None and convert the module's dtype yourself"
        )
    if ignored_modules or ignored_states:
        raise NotImplementedError(
            "FullyShardedDataParallel: ignored_modules / ignored_states are not supported by "
            "dtrain; move those modules out of the wrapped module"
        )
    if param_init_fn is not None:
        raise NotImplementedError(
            "FullyShardedDataParallel: param_init_fn (meta-device init) is not supported by "
            "dtrain; build the module with real parameters and pass param_init_fn=None"
        )
    if use_orig_params:
        raise NotImplementedError(
            "FullyShardedDataParallel: use_orig_params=True is not supported by dtrain; "
            "parameters() yields each unit's FlatParameter shard (use_orig_params=False)"
        )
    if device_mesh is not None:
        raise NotImplementedError(
            "FullyShardedDataParallel: device_mesh is not supported by dtrain; pass a "
            "process_group instead"
        )


def units_of(module: Module, unit_type: type) -> list:
    """Every FSDP unit in ``module`` (itself included), in ``modules()`` order."""
    return [m for m in module.modules() if isinstance(m, unit_type)]


@contextlib.contextmanager
def summon_full_params(
    units: list,
    writeback: bool = True,
    rank0_only: bool = False,
    offload_to_cpu: bool = False,
    with_grads: bool = False,
) -> Iterator[None]:
    """Inside the block the units' modules hold their full parameters as ordinary
    ``Parameter``s; with ``writeback`` each rank's changes to its own part are kept.

    Collective: every rank of the group must enter it."""
    if with_grads:
        raise NotImplementedError(
            "summon_full_params(with_grads=True) is not supported by dtrain; gather the "
            "gradient shards with all_gather_into_tensor if you need them"
        )
    if rank0_only and writeback:
        raise ValueError(
            "summon_full_params: rank0_only=True and writeback=True cannot be combined (as in "
            "torch); pass writeback=False"
        )
    summoned = []
    try:
        for unit in units:
            if unit._handle is None:
                continue
            unit._handle.summon(offload_to_cpu)
            # as torch: the shard is no parameter while the originals are registered
            del unit._parameters[FLAT_PARAM_NAME]
            summoned.append(unit)
        yield
    finally:
        for unit in reversed(summoned):
            unit._parameters[FLAT_PARAM_NAME] = unit._handle.flat_param
            unit._handle.unsummon(writeback)


def clean_key(key: str) -> str:
    """A state dict key without the FSDP wrappers' ``_fsdp_wrapped_module.`` parts."""
    return ".".join(part for part in key.split(".") if part != WRAPPED)


def _is_flat(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == FLAT_PARAM_NAME


def full_state_dict(root: Any, config: FullStateDictConfig, prefix: str = "") -> OrderedDict:
    """The wrapped model's state dict with its own keys and full tensors (copies).

    Collective: every rank of the group must call this."""
    units = units_of(root, type(root))
    with summon_full_params(units, writeback=False, offload_to_cpu=config.offload_to_cpu):
        raw = Module.state_dict(root, keep_vars=True)
        result = OrderedDict()
        if config.rank0_only and api.get_rank(root.process_group) != 0:
            return result
        for key, value in raw.items():
            if not _is_flat(key):
                value = value.detach().clone()  # buffers too go to the CPU, as in torch
                result[prefix + clean_key(key)] = value.cpu() if config.offload_to_cpu else value
    return result


def load_full_state_dict(root: Any, state_dict: Mapping, strict: bool) -> IncompatibleKeys:
    """Load a full state dict (the original module's keys) into the wrapped model; each
    rank keeps its shard of it.

    Collective: every rank of the group must call this, with the same state dict."""
    units = units_of(root, type(root))
    with summon_full_params(units, writeback=True):
        slots = Module.state_dict(root, keep_vars=True)
        real = {clean_key(k): k for k in slots if not _is_flat(k)}
        renamed = OrderedDict((real.get(k, k), v) for k, v in state_dict.items())
        for key, value in slots.items():
            if _is_flat(key):
                renamed[key] = value  # keeps itself: a flat parameter is no checkpoint key
        result = Module.load_state_dict(root, renamed, strict)
    return IncompatibleKeys(
        [clean_key(k) for k in result.missing_keys],
        [clean_key(k) for k in result.unexpected_keys],
    )


__all__ = [
    "BackwardPrefetch",
    "CPUOffload",
    "FullStateDictConfig",
    "MixedPrecision",
    "ShardingStrategy",
    "StateDictConfig",
    "StateDictType",
]
