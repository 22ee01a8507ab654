"""torch's ``torch.distributed.checkpoint.state_dict``: one way to get and set the state
dicts of a plain model, a DDP model or an FSDP model and its optimizers, in the layout
distributed checkpoints use.

Model state dicts have the original module's keys (no ``module.`` prefix). Optimizer state
dicts are keyed by parameter name, not index: ``{"state": {"fc.weight": {"exp_avg": ...}},
"param_groups": [{"lr": ..., "params": ["fc.weight", ...]}]}``. An optimizer that has not
stepped yet gets its state made first by a step with zero gradients and learning rate 0
(as torch does), so a fresh model and optimizer give a state dict that ``load`` can fill.
With FSDP, ``full_state_dict=False`` gives sharded state dicts (``ShardedTensor`` values)
and ``True`` full ones, through ``FullyShardedDataParallel.state_dict_type``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

from dtrain._tensor.autograd import no_grad
from dtrain._tensor.nn.module import Module
from dtrain._tensor.optim.optimizer import Optimizer
from dtrain._tensor.tensor import Tensor
from dtrain.parallel.ddp import DistributedDataParallel
from dtrain.parallel.sharded_tensor import ShardedTensor


@dataclasses.dataclass
class StateDictOptions:
    """torch's options. ``full_state_dict``: full tensors from FSDP (else ShardedTensor);
    ``cpu_offload``: tensors on the CPU (and, with ``full_state_dict`` under FSDP, only on
    rank 0 as torch); ``strict``: the model's ``load_state_dict(strict=...)``;
    ``ignore_frozen_params``: leave out parameters with ``requires_grad=False``. The
    others must keep their defaults (they raise NotImplementedError)."""

    full_state_dict: bool = False
    cpu_offload: bool = False
    ignore_frozen_params: bool = False
    keep_submodule_prefixes: bool = True
    strict: bool = True
    broadcast_from_rank0: bool = False
    flatten_optimizer_state_dict: bool = False


def _options(options: StateDictOptions | None, what: str) -> StateDictOptions:
    options = StateDictOptions() if options is None else options
    if not isinstance(options, StateDictOptions):
        raise TypeError(f"{what}: options must be a StateDictOptions, got {options!r:.60}")
    for name in ("broadcast_from_rank0", "flatten_optimizer_state_dict"):
        if getattr(options, name):
            raise NotImplementedError(
                f"{what}: StateDictOptions({name}=True) is not supported by dtrain; leave it False"
            )
    return options


def _optimizers(optimizers: Any, what: str) -> list[Optimizer]:
    found = [optimizers] if isinstance(optimizers, Optimizer) else list(optimizers)
    for optim in found:
        if not isinstance(optim, Optimizer):
            raise TypeError(
                f"{what}: optimizers must be an optimizer or an iterable of optimizers, got "
                f"{type(optim).__name__}"
            )
    return found


def _fsdp() -> Any:
    from dtrain.parallel.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel


def _is_fsdp(model: Module) -> bool:
    return bool(_fsdp().fsdp_modules(model))


def _inner(model: Module) -> Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


@contextlib.contextmanager
def _fsdp_type(model: Module, options: StateDictOptions) -> Iterator[None]:
    """FSDP's state dict type for ``options``: FULL (rank 0 only when offloading, as
    torch) or SHARDED."""
    from dtrain.parallel import fsdp_state

    kind = fsdp_state.StateDictType
    if options.full_state_dict:
        config = fsdp_state.FullStateDictConfig(
            offload_to_cpu=options.cpu_offload, rank0_only=options.cpu_offload
        )
        optim_config = fsdp_state.FullOptimStateDictConfig(
            offload_to_cpu=options.cpu_offload, rank0_only=options.cpu_offload
        )
        with _fsdp().state_dict_type(model, kind.FULL_STATE_DICT, config, optim_config):
            yield
        return
    config = fsdp_state.ShardedStateDictConfig(offload_to_cpu=options.cpu_offload)
    optim_config = fsdp_state.ShardedOptimStateDictConfig(offload_to_cpu=options.cpu_offload)
    with _fsdp().state_dict_type(model, kind.SHARDED_STATE_DICT, config, optim_config):
        yield


def _frozen(model: Module) -> set[str]:
    """The state-dict keys of the parameters with ``requires_grad=False``; under FSDP every
    original parameter a frozen flat parameter holds (torch's ``_get_fqns``)."""
    inner = _inner(model)
    if not _is_fsdp(model):
        return {n for n, p in inner.named_parameters() if not p.requires_grad}
    from dtrain.parallel.fsdp_flat import FlatParameter
    from dtrain.parallel.fsdp_layout import original_entries
    from dtrain.parallel.fsdp_state import clean_key

    frozen = {
        clean_key(n)
        for n, p in inner.named_parameters()
        if not p.requires_grad and not isinstance(p, FlatParameter)
    }
    for key, entry in original_entries(inner, _fsdp()).items():
        if entry[0] == "param" and not entry[1].handle.flat_param.requires_grad:
            frozen.add(key)
    return frozen


def _offload(value: Any) -> Any:
    """``value`` with every tensor (and ShardedTensor's local tensor) on the CPU."""
    if isinstance(value, ShardedTensor):
        return ShardedTensor(value.local_tensor().cpu(), value.shape, value.offset)
    if isinstance(value, Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _offload(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_offload(v) for v in value]
    return value


# ---- model ---------------------------------------------------------------------------------
def get_model_state_dict(
    model: Module, *, submodules: Any = None, options: StateDictOptions | None = None
) -> dict:
    """The model's state dict with the original module's keys (DDP's and FSDP's wrappers
    leave no prefix); under FSDP sharded unless ``options.full_state_dict``.

    Collective under FSDP: every rank must call this."""
    options = _options(options, "get_model_state_dict")
    if submodules is not None:
        raise NotImplementedError(
            "get_model_state_dict: submodules is not supported by dtrain (torch deprecates "
            "it); take the whole state dict and pick its keys"
        )
    if _is_fsdp(model):
        with _fsdp_type(model, options):
            result = model.state_dict()
    else:
        result = _inner(model).state_dict()
    if options.ignore_frozen_params:
        frozen = _frozen(model)
        result = {k: v for k, v in result.items() if k not in frozen}
    return _offload(result) if options.cpu_offload else result


def set_model_state_dict(
    model: Module, model_state_dict: dict, *, options: StateDictOptions | None = None
) -> Any:
    """Load ``model_state_dict`` (as ``get_model_state_dict`` gives it) into ``model``;
    returns ``load_state_dict``'s missing and unexpected keys.

    Collective under FSDP: every rank must call this."""
    options = _options(options, "set_model_state_dict")
    if _is_fsdp(model):
        with _fsdp_type(model, options):
            return model.load_state_dict(model_state_dict, strict=options.strict)
    return _inner(model).load_state_dict(model_state_dict, strict=options.strict)


# ---- optimizers ----------------------------------------------------------------------------
def _init_state(optim: Optimizer) -> None:
    """Make the state of an optimizer that has not stepped: zero gradients, a step at
    learning rate 0 (the parameters do not move), gradients cleared again (torch's way)."""
    if optim.state:
        return
    params = [p for group in optim.param_groups for p in group["params"] if p.requires_grad]
    if any(p.grad is not None for p in params):
        raise RuntimeError(
            "get_optimizer_state_dict: the optimizer has no state yet but its parameters "
            "have gradients; call optimizer.step() or optimizer.zero_grad() first"
        )
    with no_grad():
        for p in params:
            p.grad = p.detach().clone().zero_()
    lrs = [group["lr"] for group in optim.param_groups]
    try:
        for group in optim.param_groups:
            group["lr"] = 0.0 if not isinstance(group["lr"], Tensor) else group["lr"] * 0
        optim.step()
    finally:
        for group, lr in zip(optim.param_groups, lrs):
            group["lr"] = lr
        optim.zero_grad(set_to_none=True)


def _names(model: Module) -> dict[int, str]:
    return {id(p): name for name, p in _inner(model).named_parameters()}


def _by_index(optim: Optimizer) -> list:
    """The optimizer's parameters in ``state_dict``'s numbering."""
    seen: dict[int, Any] = {}
    for group in optim.param_groups:
        for p in group["params"]:
            seen.setdefault(id(p), p)
    return list(seen.values())


def _to_names(model: Module, optim: Optimizer) -> dict:
    names = _names(model)
    params = _by_index(optim)
    missing = [i for i, p in enumerate(params) if id(p) not in names]
    if missing:
        raise ValueError(
            f"get_optimizer_state_dict: the optimizer's parameters {missing} (by index) are "
            "not parameters of the model; pass the model the optimizer was built for"
        )
    fqn = [names[id(p)] for p in params]
    osd = optim.state_dict()
    state = {fqn[i]: value for i, value in osd["state"].items() if isinstance(i, int)}
    groups = [{**g, "params": [fqn[i] for i in g["params"]]} for g in osd["param_groups"]]
    return {"state": state, "param_groups": groups}


def get_optimizer_state_dict(
    model: Module,
    optimizers: Optimizer | Iterable[Optimizer],
    *,
    submodules: Any = None,
    options: StateDictOptions | None = None,
) -> dict:
    """The optimizers' state keyed by parameter name (several optimizers: one dict, their
    states merged and their param_groups one after another); see the module docstring.

    Collective under FSDP: every rank must call this."""
    what = "get_optimizer_state_dict"
    options = _options(options, what)
    if submodules is not None:
        raise NotImplementedError(f"{what}: submodules is not supported by dtrain")
    optims = _optimizers(optimizers, what)
    merged: dict = {"state": {}, "param_groups": []}
    for optim in optims:
        _init_state(optim)
        if _is_fsdp(model):
            with _fsdp_type(model, options):
                osd = _fsdp().optim_state_dict(model, optim)
        else:
            osd = _to_names(model, optim)
        merged["state"].update(osd.get("state", {}))
        merged["param_groups"].extend(osd.get("param_groups", []))
    return _offload(merged) if options.cpu_offload else merged


def _for_optimizer(model: Module, optim: Optimizer, osd: dict) -> dict:
    """The part of a by-name ``osd`` that belongs to ``optim``, by index as its
    ``load_state_dict`` takes it."""
    what = "set_optimizer_state_dict"
    names = _names(model)
    params = _by_index(optim)
    index = {names[id(p)]: i for i, p in enumerate(params) if id(p) in names}
    groups = []
    for group in optim.param_groups:
        first = names.get(id(group["params"][0])) if group["params"] else None
        saved = next((g for g in osd["param_groups"] if first in g["params"]), None)
        unnamed = [i for i, p in enumerate(group["params"]) if id(p) not in names]
        if unnamed:
            raise ValueError(
                f"{what}: the optimizer's parameters {unnamed} (by index in their group) are "
                "not parameters of the model; pass the model the optimizer was built for"
            )
        own = [names[id(p)] for p in group["params"]]
        if saved is None or sorted(saved["params"]) != sorted(own):
            raise ValueError(
                f"{what}: no saved parameter group holds exactly the parameters {own}; the "
                "optimizer's groups must be the saved ones"
            )
        groups.append({**saved, "params": [index[n] for n in saved["params"]]})
    state = {index[n]: v for n, v in osd["state"].items() if n in index}
    return {"state": state, "param_groups": groups}


def set_optimizer_state_dict(
    model: Module,
    optimizers: Optimizer | Iterable[Optimizer],
    optim_state_dict: dict,
    *,
    options: StateDictOptions | None = None,
) -> None:
    """Load a by-name optimizer state dict (``get_optimizer_state_dict``'s) into each of
    ``optimizers``.

    Collective under FSDP: every rank must call this."""
    what = "set_optimizer_state_dict"
    options = _options(options, what)
    optims = _optimizers(optimizers, what)
    if _is_fsdp(model):
        if len(optims) != 1:
            raise NotImplementedError(f"{what}: one optimizer per FSDP model in dtrain")
        with _fsdp_type(model, options):
            loaded = _fsdp().optim_state_dict_to_load(model, optims[0], optim_state_dict)
        optims[0].load_state_dict(loaded)
        return
    for optim in optims:
        optim.load_state_dict(_for_optimizer(model, optim, optim_state_dict))


# ---- both ----------------------------------------------------------------------------------
def get_state_dict(
    model: Module,
    optimizers: Optimizer | Iterable[Optimizer],
    *,
    submodules: Any = None,
    options: StateDictOptions | None = None,
) -> tuple[dict, dict]:
    """``(get_model_state_dict(model), get_optimizer_state_dict(model, optimizers))``.

    Collective under FSDP: every rank must call this."""
    model_sd = get_model_state_dict(model, submodules=submodules, options=options)
    optim_sd = get_optimizer_state_dict(model, optimizers, submodules=submodules, options=options)
    return model_sd, optim_sd


def set_state_dict(
    model: Module,
    optimizers: Optimizer | Iterable[Optimizer],
    *,
    model_state_dict: dict,
    optim_state_dict: dict,
    options: StateDictOptions | None = None,
) -> Any:
    """``set_model_state_dict`` then ``set_optimizer_state_dict``; returns the model's
    missing and unexpected keys.

    Collective under FSDP: every rank must call this."""
    keys = set_model_state_dict(model, model_state_dict, options=options)
    set_optimizer_state_dict(model, optimizers, optim_state_dict, options=options)
    return keys


__all__ = [
    "StateDictOptions",
    "get_model_state_dict",
    "get_optimizer_state_dict",
    "get_state_dict",
    "set_model_state_dict",
    "set_optimizer_state_dict",
    "set_state_dict",
]
