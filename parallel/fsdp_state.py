"""FSDP's options (``ShardingStrategy``, ``StateDictType`` and the model and optimizer state
dict configs, torch's names), the checks that refuse those dtrain does not support, and its
full-parameter views:
``summon_full_params`` and the full state dict (the original module's keys and full
tensors, gathered), and loading one back (sharded again)."""

from __future__ import annotations

import contextlib
import enum
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.module_state import load_entry
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
    """Which state dict ``state_dict()`` returns: ``FULL_STATE_DICT`` (full tensors),
    ``SHARDED_STATE_DICT`` (a ``ShardedTensor`` per original parameter) or
    ``LOCAL_STATE_DICT`` (each unit's flat shard as it is)."""

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
class ShardedStateDictConfig(StateDictConfig):
    """For ``SHARDED_STATE_DICT``; ``_use_dtensor`` is accepted and must stay False."""

    _use_dtensor: bool = False


@dataclass
class LocalStateDictConfig(StateDictConfig):
    """For ``LOCAL_STATE_DICT``."""


@dataclass
class OptimStateDictConfig:
    """Base of the optimizer state dict configs. ``offload_to_cpu``: CPU tensors (default
    True, as torch)."""

    offload_to_cpu: bool = True


@dataclass
class FullOptimStateDictConfig(OptimStateDictConfig):
    """``rank0_only``: only rank 0 gets the optimizer state dict (others get ``{}``)."""

    rank0_only: bool = False


@dataclass
class ShardedOptimStateDictConfig(OptimStateDictConfig):
    """For ``SHARDED_STATE_DICT``; ``_use_dtensor`` is accepted and must stay False."""

    _use_dtensor: bool = False


@dataclass
class LocalOptimStateDictConfig(OptimStateDictConfig):
    """For ``LOCAL_STATE_DICT`` (dtrain's optimizer state dict functions refuse it)."""

    offload_to_cpu: bool = False


@dataclass
class StateDictSettings:
    """What ``set_state_dict_type`` / ``get_state_dict_type`` return."""

    state_dict_type: StateDictType
    state_dict_config: StateDictConfig
    optim_state_dict_config: OptimStateDictConfig


DEFAULT_CONFIGS = {
    StateDictType.FULL_STATE_DICT: (FullStateDictConfig, FullOptimStateDictConfig),
    StateDictType.SHARDED_STATE_DICT: (ShardedStateDictConfig, ShardedOptimStateDictConfig),
    StateDictType.LOCAL_STATE_DICT: (LocalStateDictConfig, LocalOptimStateDictConfig),
}


def settings_for(kind: Any, config: Any, optim_config: Any) -> StateDictSettings:
    """``StateDictSettings`` for ``set_state_dict_type``'s arguments (None: the default
    config of ``kind``), checked."""
    if not isinstance(kind, StateDictType):
        raise TypeError(
            f"set_state_dict_type: state_dict_type must be a StateDictType, got {kind!r}"
        )
    model_cls, optim_cls = DEFAULT_CONFIGS[kind]
    config = model_cls() if config is None else config
    optim_config = optim_cls() if optim_config is None else optim_config
    for given, cls, what in ((config, model_cls, ""), (optim_config, optim_cls, "optim_")):
        if not isinstance(given, cls):
            raise TypeError(
                f"set_state_dict_type: {kind.name} takes {what}state_dict_config="
                f"{cls.__name__}(...), got {type(given).__name__}"
            )
        if getattr(given, "_use_dtensor", False):
            raise NotImplementedError(
                "set_state_dict_type: _use_dtensor=True is not supported by dtrain; sharded "
                "values are dtrain ShardedTensors"
            )
    return StateDictSettings(kind, config, optim_config)


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


def pop_wrapped(state_dict: dict, prefix: str) -> OrderedDict:
    """Remove the keys under ``prefix`` that hold a wrapper's name; return them cleaned."""
    wrapped = [k for k in state_dict if k.startswith(prefix) and WRAPPED in k.split(".")]
    return OrderedDict((prefix + clean_key(k[len(prefix) :]), state_dict.pop(k)) for k in wrapped)


def is_flat(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == FLAT_PARAM_NAME


def full_state_dict(root: Any, config: FullStateDictConfig, prefix: str = "") -> OrderedDict:
    """The wrapped model's state dict with its own keys and full tensors (copies).

    Collective: every rank of the group must call this."""
    units = units_of(root, type(root))
    with summon_full_params(units, writeback=False, offload_to_cpu=config.offload_to_cpu):
        raw = root._state_slots()  # no hooks: the FSDP post-hook is what calls this
        result = OrderedDict()
        if config.rank0_only and api.get_rank(root.process_group) != 0:
            return result
        for key, (_, _, value) in raw.items():
            if not is_flat(key):
                value = value.detach().clone()  # buffers too go to the CPU, as in torch
                result[prefix + clean_key(key)] = value.cpu() if config.offload_to_cpu else value
    return result


def load_full_state_dict(root: Any, state_dict: Mapping, strict: bool) -> IncompatibleKeys:
    """Load a full state dict (the original module's keys) into the wrapped model; each
    rank keeps its shard of it.

    Collective: every rank of the group must call this, with the same state dict."""
    units = units_of(root, type(root))
    with summon_full_params(units, writeback=True):
        slots = {clean_key(k): v for k, v in root._state_slots().items() if not is_flat(k)}
        missing, unexpected = check_keys(root, slots, state_dict, strict)
        with no_grad():
            for key, (module, name, target) in slots.items():
                if key in state_dict:
                    where = f"load_state_dict for {type(root).__name__}: {key!r}"
                    load_entry(module, name, target, state_dict[key], where, False)
    return IncompatibleKeys(missing, unexpected)


def check_keys(root: Any, expected: Mapping, state_dict: Mapping, strict: bool) -> tuple:
    """The missing and unexpected keys of ``state_dict`` against ``expected`` (clean keys);
    under ``strict`` an error naming them."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"load_state_dict: expected a dict-like state_dict (name -> tensor), got "
            f"{type(state_dict).__name__}"
        )
    optional = {clean_key(k) for k in root._optional_keys()}
    missing = [k for k in expected if k not in state_dict and k not in optional]
    unexpected = [k for k in state_dict if k not in expected]
    if strict and (missing or unexpected):
        raise RuntimeError(
            f"load_state_dict for {type(root).__name__}: missing keys {missing}, unexpected "
            f"keys {unexpected}; pass strict=False to load the rest"
        )
    return missing, unexpected


__all__ = [
    "BackwardPrefetch",
    "CPUOffload",
    "FullOptimStateDictConfig",
    "FullStateDictConfig",
    "LocalOptimStateDictConfig",
    "LocalStateDictConfig",
    "MixedPrecision",
    "OptimStateDictConfig",
    "ShardedOptimStateDictConfig",
    "ShardedStateDictConfig",
    "ShardingStrategy",
    "StateDictConfig",
    "StateDictSettings",
    "StateDictType",
]
