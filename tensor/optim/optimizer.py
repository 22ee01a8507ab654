"""``Optimizer``: parameter groups, per-parameter state, ``zero_grad`` and state dicts.

Subclasses implement ``step``: they gather the parameters that have a gradient and hand
their raw arrays (``p._array``, ``p.grad._array``, the state's arrays) to one module-level
update function per optimizer (``sgd_update``, ``adam_update``), which loops over them with
in-place numpy/cupy ufuncs, except for cupy parameters, which it hands to a fused
multi-tensor CUDA kernel (``dtrain.runtime.kernels``). State lives in ``self.state[p]``
as tensors wrapping arrays, or Python numbers, so a checkpoint can save it as safetensors
+ JSON.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from dtrain._tensor.autograd.grad_mode import enable_grad
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import device_id, get_array_module, is_cuda_array, on_device_of
from dtrain.runtime.device import to_device
from dtrain.runtime.kernels.multi_tensor import PersistentChecks


class _RequiredParameter:
    """Marks a hyperparameter that has no default: every param group must give it."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


def _device_key(array: Any) -> Any:
    return device_id(array) if is_cuda_array(array) else None


_SMALL = 16384  # elements; smaller numpy work arrays are allocated fresh


class Scratch:
    """What the update loops of one optimizer keep between steps, so a step allocates
    nothing per parameter and checks only what changed.

    ``get(like, slot)`` returns an uninitialised array shaped like ``like`` (same dtype and
    device), a view into one flat buffer per (slot, dtype, device) sized to the largest
    request so far (small numpy arrays are simply allocated). Two live results must use
    different slots. ``checks`` picks the parameters the multi-tensor kernels take, each
    parameter's persistent arrays checked once (``multi_tensor.PersistentChecks``).
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple, Any] = {}
        self.checks = PersistentChecks()

    def get(self, like: Any, slot: int = 0) -> Any:
        size = like.size
        if size <= _SMALL and type(like) is np.ndarray:
            return np.empty(like.shape, like.dtype)  # numpy's cache makes this the cheaper way
        key = (slot, like.dtype, _device_key(like))
        buffer = self._buffers.get(key)
        if buffer is None or buffer.size < size:
            if is_cuda_array(like):
                with on_device_of(like):
                    buffer = get_array_module(like).empty(size, like.dtype)
            else:
                buffer = np.empty(size, like.dtype)
            self._buffers[key] = buffer
        return buffer[:size].reshape(like.shape)


def zeros_like(array: Any) -> Any:
    """Zeros with ``array``'s shape and dtype, on its device."""
    if is_cuda_array(array):
        with on_device_of(array):
            return get_array_module(array).zeros(array.shape, array.dtype)
    return np.zeros(array.shape, array.dtype)


def copy_array(array: Any) -> Any:
    """A copy of ``array`` on its own device (cupy would copy onto the current device)."""
    if is_cuda_array(array):
        with on_device_of(array):
            return array.copy()
    return array.copy()


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or is_cuda_array(value)


class Optimizer:
    """Base class of the optimizers (PyTorch's ``torch.optim.Optimizer``).

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs, or of dicts that each
            hold ``"params"`` and per-group options overriding ``defaults``.
        defaults: the default hyperparameters of every group.
    """

    #: State keys whose tensors have the parameter's shape (checked by ``load_state_dict``).
    _per_element_state: tuple[str, ...] = ()

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or "
                "dicts, but got a Tensor; pass [tensor] or model.parameters()"
            )
        if isinstance(params, set):  # PyTorch checks only a group's "params" for this
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of tensors in sets will change between runs; use a list instead"
            )
        self.defaults = defaults
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        self._scratch = Scratch()
        groups = list(params)
        if not groups:
            raise ValueError(
                "optimizer got an empty parameter list; check that the model has parameters "
                "(a generator such as model.parameters() can only be iterated once)"
            )
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group) if k != "params"]
        return "\n".join(lines) + "\n)"

    # ---- parameter groups ---------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters (a dict with ``"params"`` and optional options), e.g.
        layers unfrozen while fine-tuning.

        Raises:
            TypeError: ``param_group`` is not a dict, or holds something that is not a tensor.
            ValueError: a parameter is not a leaf, is already in another group, or a required
                option is missing.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of tensors in sets will change between runs; use a list instead"
            )
        params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        if names:
            if len(names) != len(params):
                raise ValueError(
                    "all optimizer params should be with/without names; some param names are "
                    "missing (pass either model.parameters() or model.named_parameters())"
                )
            param_group["param_names"] = names
            params = [p[1] for p in params]
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"optimizer can only optimize Tensors, but params[{i}] is a {type(p).__name__}"
                )
            if not p.is_leaf:
                raise ValueError(
                    f"can't optimize a non-leaf Tensor (params[{i}] was produced by "
                    f"{type(p.grad_fn).__name__}); optimize the leaf it came from, or "
                    "detach() it and set requires_grad"
                )
        param_group["params"] = params
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(
                    "parameter group didn't specify a value of required optimization "
                    f"parameter {name}"
                )
            param_group.setdefault(name, default)
        ids = {id(p) for p in params}
        if len(ids) != len(params):
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; each would "
                "be updated twice per step",
                stacklevel=3,
            )
        for group in self.param_groups:
            if any(id(p) in ids for p in group["params"]):
                raise ValueError(
                    "some parameters appear in more than one parameter group; give each "
                    "parameter to one group only"
                )
            if ("param_names" in group) != ("param_names" in param_group):
                raise ValueError(
                    "all optimizer param groups should be with/without names; cannot mix "
                    "named_parameters() and parameters() groups"
                )
        self.param_groups.append(param_group)

    # ---- gradients and steps ------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of every parameter.

        Args:
            set_to_none: set ``.grad`` to None (the default, and cheapest) rather than filling
                it with zeros. A step skips parameters whose gradient is None.
        """
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                    continue
                grad.grad_fn = None
                grad._requires_grad = False
                grad._array.fill(0)
                grad._version[0] += 1

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update the parameters once from their ``.grad``; returns ``closure()``'s loss."""
        raise NotImplementedError

    @staticmethod
    def _closure_loss(closure: Callable[[], Any] | None) -> Any:
        if closure is None:
            return None
        with enable_grad():
            return closure()

    # ---- state dicts --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state in PyTorch's layout.

        Returns:
            ``{"state": {index: {name: tensor or number}}, "param_groups": [{option: value,
            "params": [index, ...]}]}``, parameters numbered in group order. The state tensors
            are the optimizer's own (not copies): save them before the next ``step``.
        """
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {(index[id(k)] if isinstance(k, Tensor) else k): v for k, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()`` (this optimizer's, or one saved from the same setup).

        Group options come from ``state_dict``; state tensors are copied onto each
        parameter's device (and dtype, for floating-point parameters). Index keys saved as
        strings (as JSON does) are accepted.

        Raises:
            ValueError: the number of groups, the size of a group, or the shape of a state
                tensor differs from this optimizer's parameters.
        """
        self._scratch.checks.clear()  # the state arrays it checked are replaced below
        groups = self.param_groups
        saved_groups = state_dict["param_groups"]
        if len(groups) != len(saved_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups but the optimizer "
                f"has {len(groups)}; build the optimizer with the same groups as the saved one"
            )
        for i, (group, saved) in enumerate(zip(groups, saved_groups)):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError(
                    f"loaded state dict's parameter group {i} has {len(saved['params'])} "
                    f"parameters but the optimizer's has {len(group['params'])}; the model or "
                    "the grouping differs from the saved one"
                )
        id_map: dict[Any, Tensor] = {}
        for group, saved in zip(groups, saved_groups):
            id_map.update(zip((_int_key(k) for k in saved["params"]), group["params"]))

        state: defaultdict[Any, dict[str, Any]] = defaultdict(dict)
        for key, value in state_dict["state"].items():
            key = _int_key(key)
            param = id_map.get(key)
            if param is None:
                state[key] = value
                continue
            state[param] = {
                name: self._cast_state(param, key, name, v) for name, v in value.items()
            }

        new_groups = []
        for group, saved in zip(groups, saved_groups):
            new_group = {}
            for name, value in saved.items():
                if name == "params":
                    continue
                if isinstance(group.get(name), tuple) and isinstance(value, list):
                    value = tuple(value)  # JSON turns betas=(0.9, 0.999) into a list
                elif isinstance(value, Tensor):  # a tensor lr: this optimizer's own, as
                    value = value.detach().clone()  # PyTorch deep-copies the saved groups
                new_group[name] = value
            new_group["params"] = group["params"]
            if "param_names" in group and "param_names" not in new_group:
                new_group["param_names"] = group["param_names"]
            new_groups.append(new_group)
        self.state = state
        self.param_groups = new_groups

    def _cast_state(self, param: Tensor, index: Any, name: str, value: Any) -> Any:
        """A copy of one saved state value, on ``param``'s device; floats in its dtype."""
        if isinstance(value, Tensor):
            value = value._array
        elif not _is_array(value):
            return value
        if name == "step":  # a PyTorch checkpoint's step is a 0-d tensor; ours is a number
            return value.item()
        target = param._array
        if name in self._per_element_state and value.shape != target.shape:
            raise ValueError(
                f"loaded state dict's state[{index}][{name!r}] has shape {tuple(value.shape)} "
                f"but the parameter has shape {tuple(target.shape)}; the model differs from "
                "the saved one"
            )
        moved = to_device(value, param.device)
        dtype = target.dtype if target.dtype.kind == "f" else moved.dtype
        return wrap(moved.astype(dtype, copy=moved is value))


def _int_key(key: Any) -> Any:
    if isinstance(key, str) and key.isdigit():
        return int(key)
    return key


def grads_and_states(
    optimizer: Optimizer,
    group: dict[str, Any],
    init: Callable[[dict[str, Any], Any], None],
    params: list[Tensor] | None = None,
) -> tuple[list[Tensor], list[Any], list[dict[str, Any]]]:
    """The parameters of ``group`` that have a gradient (``params``, where the caller has
    picked them already), their gradient arrays, and their state dicts
    (``init(state, param_array)`` fills an empty one)."""
    picked, grads, states = [], [], []
    all_state = optimizer.state
    for p in group["params"] if params is None else params:
        grad = p.grad
        if grad is None:
            continue
        state = all_state[p]
        if not state:
            init(state, p._array)
        picked.append(p)
        grads.append(grad._array)
        states.append(state)
    return picked, grads, states


def check_lr(lr: Any) -> None:
    """Refuse a negative or NaN learning rate, or a tensor one of more than one element.

    A one-element tensor is accepted (as PyTorch): it stays in the group, so it can be
    changed in place, and each ``step()`` reads its value (a host read for a CUDA tensor).
    """
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError(
            f"Tensor lr must be 1-element, got shape {tuple(lr.shape)}; pass a float or a "
            "0-d tensor"
        )
    if not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr}; lr must be >= 0")


def scalar(value: Any) -> Any:
    """A hyperparameter as a Python number: a one-element tensor (e.g. ``lr``) is read."""
    return value.item() if isinstance(value, Tensor) else value


def bump_versions(params: Iterable[Tensor]) -> None:
    """Mark ``params`` as changed in place (a backward that saved them will refuse to run)."""
    for p in params:
        p._version[0] += 1


__all__ = [
    "Optimizer",
    "Scratch",
    "bump_versions",
    "check_lr",
    "copy_array",
    "grads_and_states",
    "required",
    "scalar",
    "zeros_like",
]
