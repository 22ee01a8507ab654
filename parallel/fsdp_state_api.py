"""The state-dict type methods and optimizer state dict methods of
``FullyShardedDataParallel`` (torch calls them on the class: ``FSDP.optim_state_dict(model,
optim)``), as a base class so ``fsdp.py`` keeps to the unit itself. ``cls`` is always
``FullyShardedDataParallel``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from dtrain._tensor.nn.module import Module
from dtrain.parallel import fsdp_optim
from dtrain.parallel.fsdp_state import (
    StateDictSettings,
    StateDictType,
    settings_for,
    units_of,
)


class FsdpStateDictMethods:
    """Mixed into ``FullyShardedDataParallel``."""

    @classmethod
    def set_state_dict_type(
        cls,
        module: Module,
        state_dict_type: StateDictType,
        state_dict_config: Any = None,
        optim_state_dict_config: Any = None,
    ) -> StateDictSettings | None:
        """Make ``state_dict()`` / ``load_state_dict()`` of every unit in ``module`` use
        ``state_dict_type`` (and ``FSDP.optim_state_dict`` its optimizer counterpart);
        None configs take that type's defaults. Returns the previous settings (None when
        ``module`` holds no FSDP unit)."""
        settings = settings_for(state_dict_type, state_dict_config, optim_state_dict_config)
        previous = None
        for unit in units_of(module, cls):
            previous = previous or cls._settings(unit)
            unit._state_dict_type = settings.state_dict_type
            unit._state_dict_config = settings.state_dict_config
            unit._optim_state_dict_config = settings.optim_state_dict_config
        return previous

    @classmethod
    def get_state_dict_type(cls, module: Module) -> StateDictSettings:
        """The state dict settings of the units in ``module`` (they must all agree)."""
        units = units_of(module, cls)
        if not units:
            raise ValueError("get_state_dict_type: the module holds no FSDP unit")
        first = cls._settings(units[0])
        for unit in units[1:]:
            if cls._settings(unit) != first:
                raise AssertionError(
                    "get_state_dict_type: the FSDP units have different state dict settings; "
                    "set them with FSDP.set_state_dict_type(root, ...)"
                )
        return first

    @classmethod
    def _settings(cls, unit: Any) -> StateDictSettings:
        return StateDictSettings(
            unit._state_dict_type, unit._state_dict_config, unit._optim_state_dict_config
        )

    @classmethod
    @contextlib.contextmanager
    def state_dict_type(
        cls,
        module: Module,
        state_dict_type: StateDictType,
        state_dict_config: Any = None,
        optim_state_dict_config: Any = None,
    ) -> Iterator[None]:
        """``set_state_dict_type`` for the block only."""
        units = units_of(module, cls)
        before = [cls._settings(u) for u in units]
        cls.set_state_dict_type(module, state_dict_type, state_dict_config, optim_state_dict_config)
        try:
            yield
        finally:
            for unit, settings in zip(units, before):
                unit._state_dict_type = settings.state_dict_type
                unit._state_dict_config = settings.state_dict_config
                unit._optim_state_dict_config = settings.optim_state_dict_config

    # ---- optimizer state dicts -----------------------------------------------------------
    @classmethod
    def optim_state_dict(
        cls, model: Module, optim: Any, optim_state_dict: dict | None = None, group: Any = None
    ) -> dict:
        """``optim``'s state keyed by the original parameters' names (the model state dict's
        keys), ``param_groups``' ``params`` as name lists: under ``FULL_STATE_DICT`` full
        tensors of each parameter's shape (``{}`` on other ranks with
        ``FullOptimStateDictConfig(rank0_only=True)``), under ``SHARDED_STATE_DICT`` this
        rank's ``ShardedTensor`` of each. ``model`` is the FSDP root or a module holding it.

        Collective (``FULL_STATE_DICT``): every rank of the group must call this."""
        settings = cls.get_state_dict_type(model)
        if settings.state_dict_type is StateDictType.LOCAL_STATE_DICT:
            raise NotImplementedError(
                "FSDP.optim_state_dict under LOCAL_STATE_DICT is not supported by dtrain; save "
                "optim.state_dict() on each rank (it holds that rank's shards) or use "
                "FULL_STATE_DICT / SHARDED_STATE_DICT"
            )
        config = settings.optim_state_dict_config
        return fsdp_optim.optim_state_dict(
            model,
            optim,
            optim.state_dict() if optim_state_dict is None else optim_state_dict,
            cls,
            full=settings.state_dict_type is StateDictType.FULL_STATE_DICT,
            rank0_only=getattr(config, "rank0_only", False),
            offload_to_cpu=config.offload_to_cpu,
            group=group,
        )

    @classmethod
    def optim_state_dict_to_load(
        cls,
        model: Module,
        optim: Any,
        optim_state_dict: dict,
        is_named_optimizer: bool = False,
        load_directly: bool = False,
        group: Any = None,
    ) -> dict:
        """``optim_state_dict`` (``FSDP.optim_state_dict``'s full or sharded form, maybe saved
        at another world size) as ``optim.load_state_dict`` takes it for this rank's shards
        (loaded into ``optim`` too with ``load_directly``). Sharded values must hold this
        rank's ranges. No communication."""
        if is_named_optimizer:
            raise NotImplementedError(
                "optim_state_dict_to_load(is_named_optimizer=True) is not supported by dtrain"
            )
        result = fsdp_optim.to_load(model, optim, optim_state_dict, cls)
        if load_directly:
            optim.load_state_dict(result)
        return result

    @classmethod
    def full_optim_state_dict(
        cls,
        model: Module,
        optim: Any,
        optim_input: Any = None,
        rank0_only: bool = True,
        group: Any = None,
    ) -> dict:
        """The full optimizer state dict (``optim_state_dict``'s ``FULL_STATE_DICT`` form),
        on rank 0 only by default (``{}`` elsewhere); torch's older API.

        Collective: every rank of the group must call this."""
        _no_optim_input(optim_input)
        return fsdp_optim.optim_state_dict(
            model,
            optim,
            optim.state_dict(),
            cls,
            full=True,
            rank0_only=rank0_only,
            offload_to_cpu=True,
            group=group,
        )

    @classmethod
    def shard_full_optim_state_dict(
        cls, full_optim_state_dict: dict, model: Module, optim_input: Any = None, optim: Any = None
    ) -> dict:
        """This rank's part of a full optimizer state dict, for ``optim.load_state_dict``
        (without ``optim``, numbered as an optimizer built on ``model.parameters()``)."""
        _no_optim_input(optim_input)
        return fsdp_optim.to_load(model, optim, full_optim_state_dict, cls)

    @classmethod
    def scatter_full_optim_state_dict(
        cls,
        full_optim_state_dict: dict | None,
        model: Module,
        optim_input: Any = None,
        optim: Any = None,
        group: Any = None,
    ) -> dict:
        """As ``shard_full_optim_state_dict``, the full state dict given on rank 0 only
        (others pass None): rank 0 broadcasts it (dtrain sends the whole dict to every rank,
        torch each rank's part).

        Collective: every rank of the group must call this."""
        _no_optim_input(optim_input)
        full = fsdp_optim.broadcast_state(full_optim_state_dict, group)
        return fsdp_optim.to_load(model, optim, full, cls)


def _no_optim_input(optim_input: Any) -> None:
    if optim_input is not None:
        raise NotImplementedError(
            "FSDP: optim_input (deprecated in torch) is not supported by dtrain; pass optim= "
            "or build the optimizer on model.parameters()"
        )
