"""dtrain's CUDA code paths run on the CPU: a numpy-backed stand-in for cupy.

``install(monkeypatch)`` makes ``dt.cuda_is_available()`` true and ``device="cuda"`` arrays
``EmuArray`` (numpy arrays whose type says "cupy"): every op then takes its CUDA branch,
the fused kernels included, with each kernel launch checked against its CUDA C signature
(``kernel_signatures.check_launch``) and then carried out by the kernel's numpy reference,
and each matrix product planned by ``runtime/cublas.plan`` (its copies of odd layouts
counted) and done by numpy, those with a cuBLASLt bias epilogue included. What this tests
is the glue: which branch runs, what is passed to a kernel, what is kept for backward. With
``install(..., kernels="source")`` each launch runs the kernel's own CUDA C instead of its
reference (``host_cuda``), so the kernels' code is tested too, short of speed. With
``kernels="uncarried"`` launches are only counted (``bench/host_cost.py`` times what is
left: dtrain's own host work).

It also counts what a real GPU would be asked to do (``Emulator.launches``): elementwise and
reduction calls, copies, kernel launches and matrix products, by name, and the host reads
that would wait for the GPU. A step's launch count is its host cost on a small model.
"""

from __future__ import annotations

import collections
import sys
import threading
import types
from collections.abc import Callable
from typing import Any, ClassVar

import host_cuda
import numpy as np
from kernel_signatures import KERNEL_MODULES, FakeCupyArray, _Device, _Pointer, check_launch

from dtrain.runtime import backend, cublas, cublaslt, device_selection
from dtrain.runtime import kernels as K
from dtrain.runtime import random as random_state

_counts: collections.Counter | None = None  # the running emulator's tally, when counting
# What costs cupy host time without a launch, counted beside the launches: allocations,
# views (reshape, basic indexing, transpose), device switches (``with device``) and
# Device objects (``array.device``).
_host_calls: collections.Counter | None = None


def _count(name: str) -> None:
    if _counts is not None:
        _counts[name] += 1


def _count_host(name: str) -> None:
    if _host_calls is not None:
        _host_calls[name] += 1


def _wrap(out: Any) -> Any:
    if type(out) is np.ndarray:
        return _on_current(out.view(EmuArray))
    if isinstance(out, np.generic):  # cupy's reductions give 0-d arrays, not scalars
        return _on_current(np.asarray(out).view(EmuArray))
    if isinstance(out, tuple) and hasattr(out, "_fields"):  # numpy's named results (slogdet)
        return type(out)(*(_wrap(o) for o in out))
    if isinstance(out, (tuple, list)):
        return type(out)(_wrap(o) for o in out)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.view(np.ndarray)
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    return value


def _on_current(array: EmuArray) -> EmuArray:
    array.device_id = _current_device()  # as cupy: a new array lives on the current device
    return array


def _basic(key: Any) -> bool:
    """Whether indexing with ``key`` is basic (slices, ints, None, Ellipsis): a view."""
    parts = key if isinstance(key, tuple) else (key,)
    return not any(isinstance(p, (np.ndarray, list)) or hasattr(p, "__array__") for p in parts)


class EmuArray(FakeCupyArray):
    """A "cupy" array: numpy underneath, counted as a GPU would be asked to work."""

    device_id = 0

    def __array_finalize__(self, parent: Any) -> None:
        self.device_id = getattr(parent, "device_id", 0)  # a view lives where its base does

    @property
    def device(self) -> _EmuDevice:
        _count_host("Device object")
        return _EmuDevice(self.device_id)

    @property
    def T(self) -> Any:  # noqa: N802 - numpy's name
        _count_host("view")
        return np.ndarray.transpose(self)

    def transpose(self, *axes: Any) -> Any:
        _count_host("view")
        return np.ndarray.transpose(self, *axes)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        _count(f"{ufunc.__name__}.{method}")
        _check_devices((*inputs, *kwargs.get("out", ())))
        if "out" in kwargs:
            kwargs["out"] = _plain(kwargs["out"])
        return _wrap(getattr(ufunc, method)(*_plain(inputs), **kwargs))

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        _count(func.__name__)
        _check_devices((args, kwargs))
        return _wrap(func(*_plain(args), **_plain(kwargs)))

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (EmuArray, tuple, list)):  # an array index is a gather kernel
            _check_devices((self, key))
        out = np.ndarray.__getitem__(self, key)
        if isinstance(out, np.ndarray):
            if _basic(key):
                _count_host("view")
            else:
                _count("gather")  # an array index is a gather launch on cupy, not a view
        if isinstance(out, np.generic):  # cupy: an integer index gives a 0-d view
            parts = key if isinstance(key, tuple) else (key,)
            return np.ndarray.__getitem__(self, (*parts, Ellipsis))
        return out

    def __setitem__(self, key: Any, value: Any) -> None:
        _count("setitem")
        _check_devices((self, key, value))
        np.ndarray.__setitem__(self.view(np.ndarray), _plain(key), _plain(value))

    def reshape(self, *shape: Any, **kwargs: Any) -> Any:
        out = np.ndarray.reshape(self, *shape, **kwargs)
        if out.size and not np.may_share_memory(out.view(np.ndarray), self.view(np.ndarray)):
            _count("reshape (copy)")
        else:
            _count_host("view")
        return out

    def astype(self, dtype: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("copy", True) is False and np.dtype(dtype) == self.dtype:
            return self  # as cupy: the array itself, no kernel
        _count("astype")
        _check_devices((self,))
        return _wrap(np.ndarray.astype(self.view(np.ndarray), dtype, *args, **kwargs))

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        _count("copy")
        _check_devices((self,))
        return _wrap(np.ndarray.copy(self.view(np.ndarray), *args, **kwargs))

    def fill(self, value: Any) -> None:
        _count("fill")
        np.ndarray.fill(self, value)

    def get(self, *args: Any, **kwargs: Any) -> np.ndarray:
        _count("host read: get")
        return np.array(self.view(np.ndarray))

    @property
    def data(self) -> _Pointer:
        pointer = FakeCupyArray.data.fget(self)
        pointer.device_id = self.device_id
        return pointer

    def item(self) -> Any:
        _count("host read: item")
        return np.ndarray.item(self)

    def __float__(self) -> float:
        _count("host read: float")
        return float(self.view(np.ndarray))

    def __bool__(self) -> bool:
        _count("host read: bool")
        return bool(self.view(np.ndarray))


EmuArray.__module__ = "cupy._emulated"


class _Stream:
    ptr = 0

    def synchronize(self) -> None:
        return None

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


class _EmuDevice(_Device):
    """A device of the emulator. As CUDA's, the current device belongs to a host thread
    (a new thread starts on 0): ``use()`` sets it, ``with device:`` sets it for the block."""

    threads: ClassVar[threading.local] = threading.local()  # install() gives each its own

    def __init__(self, id: int | None = None) -> None:
        super().__init__(_current_device() if id is None else id)
        self._outer: list[int] = []

    def use(self) -> None:
        self.threads.id = self.id

    def __enter__(self) -> _EmuDevice:
        _count_host("device switch")
        self._outer.append(_current_device())
        self.use()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.threads.id = self._outer.pop()

    def synchronize(self) -> None:
        return None


def _current_device() -> int:
    return getattr(_EmuDevice.threads, "id", 0)


def _arrays_in(values: Any) -> Any:
    """The EmuArrays among ``values``, looking into lists, tuples and dicts (a kernel's
    argument tuple, ``cat``'s list, an index tuple)."""
    for value in values:
        if isinstance(value, EmuArray):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from _arrays_in(value)
        elif isinstance(value, dict):
            yield from _arrays_in(value.values())


def _check_devices(arrays: Any) -> None:
    """cupy's check where GPUs have no peer access: a kernel's arrays must live on the
    current device (the emulator has no peer access, so a wrong device always shows)."""
    current = _current_device()
    for array in _arrays_in(arrays):
        if array.device_id != current:
            raise ValueError(
                f"The device where the array resides ({array.device_id}) is different from "
                f"the current device ({current}). Peer access is unavailable between these "
                "devices."
            )


# cupy's ufunc.at: only the ufuncs with a scatter kernel, and with an integer-array index
# only these dtypes (its atomics; cupy/_core/_routines_indexing.pyx, _scatter_op_single).
_AT_DTYPES = {
    "add": ("int32", "float16", "float32", "float64", "uint32", "uint64"),
    "subtract": ("int32", "uint32"),
    "maximum": ("int32", "float32", "float64", "uint32", "uint64"),
    "minimum": ("int32", "float32", "float64", "uint32", "uint64"),
    "bitwise_and": ("int32", "int64", "uint32", "uint64"),
    "bitwise_or": ("int32", "int64", "uint32", "uint64"),
    "bitwise_xor": ("int32", "int64", "uint32", "uint64"),
}


def _check_at(name: str, array: Any, indices: Any) -> None:
    """Refuse the ``ufunc.at`` calls that real cupy refuses, with cupy's errors."""
    if name not in _AT_DTYPES:
        raise NotImplementedError(f"`cupy_{name}.at` is not supported yet")
    parts = indices if isinstance(indices, tuple) else (indices,)
    arrays = [np.asarray(_plain(p)) for p in parts if isinstance(p, (EmuArray, np.ndarray, list))]
    if not arrays or (len(arrays) == 1 and arrays[0].dtype.kind == "b"):
        return  # slices only, or one boolean mask: cupy's kernels there take any dtype
    dtype = np.dtype(_plain(array).dtype).name
    if dtype not in _AT_DTYPES[name]:
        raise TypeError(
            f"cupy.{name}.at only supports {', '.join(_AT_DTYPES[name])} as data type, got {dtype}"
        )


def _module(devices: int = 1) -> types.ModuleType:
    """A "cupy" module: numpy's functions returning EmuArrays, and the cuda namespace with
    ``devices`` GPUs (each array made on the current one)."""
    cupy = types.ModuleType("cupy")
    cupy.ndarray = EmuArray
    rng = np.random.default_rng(0)
    allocations = {"empty", "empty_like"}  # no launch: memory only

    def function(name: str) -> Any:
        target = getattr(np, name)
        if not callable(target) or isinstance(target, type):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            if name not in allocations:
                _count(name)
                _check_devices((args, kwargs))
            else:
                _count_host("allocation (empty)")
            return _wrap(target(*_plain(args), **_plain(kwargs)))

        if isinstance(target, np.ufunc):  # cupy.add.at(...) and the like

            def at(array: Any, indices: Any, values: Any = None) -> None:
                _count(f"{name}.at")
                _check_at(name, array, indices)
                extra = () if values is None else (_plain(values),)
                target.at(_plain(array), _plain(indices), *extra)

            call.at = at
        return call

    cupy.__getattr__ = function

    def asarray(array: Any, dtype: Any = None) -> EmuArray:
        _count("asarray")
        return _wrap(np.array(_plain(array), dtype=dtype))

    cupy.asarray = asarray
    cupy.asnumpy = lambda array: np.array(_plain(array))
    cupy.cuda = types.SimpleNamespace(
        Device=_EmuDevice,
        runtime=types.SimpleNamespace(getDeviceCount=lambda: devices, getDevice=_current_device),
        get_current_stream=_Stream,
        Stream=lambda **options: _Stream(),
    )
    cupy.random = types.SimpleNamespace(
        seed=lambda seed: None,
        uniform=lambda low, high, shape, dtype=None: _wrap(
            rng.uniform(low, high, shape).astype(dtype)
        ),
        normal=lambda mean, std, shape, dtype=None: _wrap(
            rng.normal(mean, std, shape).astype(dtype)
        ),
    )
    cupy.get_default_memory_pool = lambda: types.SimpleNamespace(used_bytes=lambda: 0)

    def as_strided(array: Any, shape: Any = None, strides: Any = None) -> EmuArray:
        # numpy's would hand back a plain ndarray: a view that no longer says "cupy"
        return _wrap(np.lib.stride_tricks.as_strided(_plain(array), shape, strides))

    cupy.lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(as_strided=as_strided))
    return cupy


# ---- the kernels, by their numpy references ----------------------------------------------------
def _np(array: Any) -> Any:
    return None if array is None else array.view(np.ndarray)


def _lists(struct: np.ndarray, n: Any) -> list[list[Any]]:
    """The memory behind a TensorList's pointers, row by row (None for a null pointer)."""
    n = int(n)
    sizes = [int(size) for size in struct["size"][0][:n]]
    rows = struct["ptr"][0][:, :n]
    return [[_at(int(p), size) if p else None for p, size in zip(row, sizes)] for row in rows]


def _at(pointer: int, size: int) -> np.ndarray:
    """The ``size`` elements a kernel reads from ``pointer``, as a flat view of the
    allocation there, as a GPU reads them: not whichever view of it last gave its ``.data``
    (a transpose of a parameter starts where the parameter does)."""
    known = FakeCupyArray.registry.get(pointer)
    if known is None:
        raise AssertionError(f"pointer {pointer:#x} is no array the emulator made")
    owner = known.view(np.ndarray)
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    start = pointer - owner.__array_interface__["data"][0]
    count = min(size, known.size)  # a row of scalars (device step counts) reads one each
    if start < 0 or start + count * known.itemsize > owner.nbytes:
        raise AssertionError(f"{count} elements at {pointer:#x} run past their allocation")
    shape = () if known.ndim == 0 else (count,)
    return np.ndarray(shape, known.dtype, buffer=owner, offset=start)


def _layer_norm_forward(x, w, b, has_w, has_b, out, stats, rows, cols, eps):
    shape = (int(rows), int(cols))  # the kernel reads each array's memory as rows of cols
    weight, bias = (_np(w).reshape(-1) if has_w else None), (_np(b).reshape(-1) if has_b else None)
    y, _np(stats)[...] = K.layer_norm_forward_reference(
        _np(x).reshape(shape), weight, bias, float(eps)
    )
    _np(out).reshape(shape)[...] = y


def _layer_norm_backward(g, x, w, has_w, stats, add, has_add, grad_x, *rest):
    partials, param_grads, counter, finish, rows, cols, _per_chunk, chunks = rest
    shape, chunks = (int(rows), int(cols)), int(chunks)
    weight = _np(w).reshape(-1) if has_w else None
    addend = _np(add).reshape(shape) if has_add else None
    grad, x = _np(g).reshape(shape), _np(x).reshape(shape)
    _np(grad_x).reshape(shape)[...] = K.layer_norm_backward_reference(
        grad, x, weight, _np(stats), addend
    )[0]
    if chunks:  # the parameters' partials (2, chunks, cols): the whole sum in the first chunk
        _, sum_w, sum_b = K.layer_norm_backward_reference(grad, x, None, _np(stats))
        blocks = _np(partials).reshape(2, chunks, -1)
        blocks[...] = 0
        blocks[:, 0] = sum_w, sum_b
        if finish:  # the last partial block's sums; it leaves the counter at 0
            assert int(_np(counter)[0]) == 0, "a launch found the counter not reset"
            _np(param_grads).reshape(2, -1)[...] = sum_w, sum_b


def _layer_norm_finish(partials, param_grads, chunks, cols):
    blocks = _np(partials).reshape(2, int(chunks), int(cols))
    _np(param_grads).reshape(2, int(cols))[...] = blocks.sum(axis=1)


def _cross_entropy_forward(logits, target, loss, lse, row_loss, mean, count, counter, *rest):
    finish, _rows, _cols, ignore = rest
    out = K.cross_entropy_forward_reference(_np(logits), _np(target), int(ignore))
    _np(loss)[...], _np(lse)[...] = out
    if finish:  # the last block's mean; it leaves the counter at 0
        assert int(_np(counter)[0]) == 0, "a launch found the counter not reset"
        _np(row_loss)[...] = out[0]
        _np(mean)[...], _np(count)[...] = K.cross_entropy_mean_reference(
            out[0], _np(target), int(ignore)
        )


def _cross_entropy_backward(
    logits, target, lse, scale, stride, divisor, has_divisor, grad, rows, cols, ignore
):
    per_row = np.broadcast_to(_np(scale).reshape(-1), (int(rows),)) if not stride else _np(scale)
    _np(grad)[...] = K.cross_entropy_backward_reference(
        _np(logits), _np(target), _np(lse), per_row, int(ignore),
        _np(divisor) if has_divisor else None,
    )  # fmt: skip


def _cross_entropy_mean(loss, target, mean, count, rows, ignore):
    _np(mean)[...], _np(count)[...] = K.cross_entropy_mean_reference(
        _np(loss), _np(target), int(ignore)
    )


def _gelu_args(x, bias, bias_size, tanh_form):
    return _np(x), ("tanh" if tanh_form else "none"), (_np(bias) if bias_size else None)


def _gelu_forward(x, bias, bias_size, out, n, tanh_form):
    _np(out)[...] = K.gelu_forward_reference(*_gelu_args(x, bias, bias_size, tanh_form))


def _gelu_backward(grad, x, bias, bias_size, grad_x, n, tanh_form):
    args = _gelu_args(x, bias, bias_size, tanh_form)
    _np(grad_x)[...] = K.gelu_backward_reference(_np(grad), *args)


def _relu_backward(grad, out, grad_x, n):
    _np(grad_x)[...] = K.relu_backward_reference(_np(grad), _np(out))


def _softmax_forward(x, y, rows, cols, causal, scale):
    _np(y)[...] = K.scaled_softmax_forward_reference(_np(x), float(scale), int(causal))


def _softmax_backward(grad, y, grad_x, rows, cols, scale):
    _np(grad_x)[...] = K.scaled_softmax_backward_reference(_np(grad), _np(y), float(scale))


def _sum_squares(struct, n, partials, counter, finish, add, total):
    grads = _lists(struct, n)[0]
    value = sum(float(np.sum(_np(g).astype(np.float64) ** 2)) for g in grads)
    if finish:  # the last block's sum; it leaves the counter at 0
        assert int(_np(counter)[0]) == 0, "a launch found the counter not reset"
        _np(total)[...] = value + (float(_np(total)) if add else 0.0)
    else:
        _np(total)[...] += value


def _clip(struct, n, total, max_norm, norm):
    grads = [_np(g) for g in _lists(struct, n)[0]]
    _np(norm)[...] = np.sqrt(float(_np(total)))
    factor = float(max_norm) / (np.sqrt(float(_np(total))) + 1e-6)
    if not factor >= 1:  # a NaN norm scales too, as the kernel
        for g in grads:
            g *= g.dtype.type(factor)


def _unscale(struct, n, inv_scale, seen, counter, finish, keep, found):
    bad = K.unscale_reference([_np(g) for g in _lists(struct, n)[0]], float(inv_scale))
    if finish:  # the last block's verdict; it leaves the counter at 0
        assert int(_np(counter)[0]) == 0, "a launch found the counter not reset"
        kept = bool(keep) and float(_np(found)) != 0
        _np(found)[...] = np.inf if bad or kept else 0.0
    elif bad:
        _np(found)[...] = np.inf


def _adam_increment(struct, n):
    for step in _lists(struct, n)[5]:
        _np(step)[...] += 1


def _host_step(lr: float, beta1: float, beta2: float, step_size: float, bc2: float) -> int:
    """The step a host-step Adam launch is for: it passes only the bias corrections,
    ``lr / (1 - beta1**step)`` and ``sqrt(1 - beta2**step)``; either one gives it back."""
    if 0 < beta2 < 1 and bc2 < 1:
        return round(np.log(1 - bc2 * bc2) / np.log(beta2))
    if 0 < beta1 < 1 and lr:
        return round(np.log(1 - lr / step_size) / np.log(beta1))
    return 1  # both corrections are 1 at every step: any step gives the same update


def _adam(struct, n, lr, b1, b2, eps, wd, amsgrad, maximize, decoupled, capturable, size, bc2):
    p, g, m, v, v_max, steps = _lists(struct, n)
    host_step = 0 if capturable else _host_step(float(lr), float(b1), float(b2), size, bc2)
    for i in range(int(n)):
        step = float(_np(steps[i])) if capturable else host_step
        K.adam_reference(
            _np(p[i]), _np(g[i]), _np(m[i]), _np(v[i]), _np(v_max[i]) if amsgrad else None,
            step=step, lr=float(lr), beta1=float(b1), beta2=float(b2), eps=float(eps),
            weight_decay=float(wd), amsgrad=bool(amsgrad), maximize=bool(maximize),
            decoupled_weight_decay=bool(decoupled),
        )  # fmt: skip


def _sgd(struct, n, lr, momentum, dampening, wd, nesterov, maximize, first):
    p, g, buffers, *_ = _lists(struct, n)
    for i in range(int(n)):
        K.sgd_reference(
            _np(p[i]), _np(g[i]), _np(buffers[i]), first=bool(first), lr=float(lr),
            momentum=float(momentum), dampening=float(dampening), weight_decay=float(wd),
            nesterov=bool(nesterov), maximize=bool(maximize),
        )  # fmt: skip


def _scale_inplace(x, n, factor):
    _np(x)[...] = K.scale_reference(_np(x), float(factor))


def _scale_cast(x, out, n, factor):
    _np(out)[...] = K.scale_reference(_np(x), float(factor), out.dtype)


def _operand(array, sb, sh, sl, sd, shape):
    """The (b, h, l, d) operand the attention kernels read from ``array``'s first element
    through these element strides: a wrong stride reads wrong numbers here as on a GPU."""
    item = array.itemsize
    strides = tuple(int(s) * item for s in (sb, sh, sl, sd))
    return np.lib.stride_tricks.as_strided(_np(array), shape, strides, writeable=False)


def _attention_operands(args, sizes):
    batch, heads, length, keys, dim, dim_v = (int(s) for s in sizes)
    shapes = [(batch, heads, length, dim), (batch, heads, keys, dim), (batch, heads, keys, dim_v)]
    shapes.append((batch, heads, length, dim_v))  # the output's gradient
    count = len(args) // 5
    return [_operand(*args[5 * i : 5 * i + 5], shapes[i]) for i in range(count)]


def _attention_forward(*args):
    q, k, v = _attention_operands(args[:15], args[17:23])
    y, stats = args[15], args[16]
    causal, scale = bool(args[23]), float(args[24])
    out = K.attention_forward_reference(q, k, v, scale, causal)
    _np(y)[...] = np.swapaxes(out, 1, 2)
    scores = q.astype(np.float64) @ np.swapaxes(k.astype(np.float64), -1, -2) * scale
    if causal:
        scores = np.where(np.tri(*scores.shape[-2:], dtype=bool), scores, -np.inf)
    top = scores.max(axis=-1, keepdims=True)
    # stats (2, b, h, l): the forward writes the first half, lse
    _np(stats)[0] = (top + np.log(np.exp(scores - top).sum(axis=-1, keepdims=True)))[..., 0]


def _rows_out(array, offset, row, like):
    """The (b, l, h, d) output ``offset`` elements into ``array`` with ``row`` elements from
    one (b, l) row to the next, as the backward kernels write it (``like`` is (b, h, l, d))."""
    batch, heads, length, dim = like.shape
    item = array.itemsize
    strides = (length * int(row) * item, int(row) * item, dim * item, item)
    start = _np(array).reshape(-1)[int(offset) :]
    return np.lib.stride_tricks.as_strided(start, (batch, length, heads, dim), strides)


def _attention_backward(*args, columns: bool):
    q, k, v, grad = _attention_operands(args[:20], args[-8:-2])
    causal, scale = bool(args[-2]), float(args[-1])
    dq, dk, dv = K.attention_backward_reference(grad, q, k, v, scale, causal)
    if columns:  # (stats, dk, dk_offset, dk_row, dv, dv_offset, dv_row)
        _rows_out(args[21], args[22], args[23], dk)[...] = np.swapaxes(dk, 1, 2)
        _rows_out(args[24], args[25], args[26], dv)[...] = np.swapaxes(dv, 1, 2)
    else:  # (y, stats, dq, dq_row): D into the second half of stats
        _rows_out(args[22], 0, args[23], dq)[...] = np.swapaxes(dq, 1, 2)
        y = K.attention_forward_reference(q, k, v, scale, causal).astype(np.float64)
        _np(args[21])[1] = (grad.astype(np.float64) * y).sum(axis=-1)


def _cast(struct, n):
    sources, outs = _lists(struct, n)[:2]
    for out, cast in zip(outs, K.cast_reference([_np(x) for x in sources], outs[0].dtype)):
        _np(out)[...] = cast


def _tile(struct, n, out, row):
    n = int(n)
    flat = _np(out).reshape(-1, int(row))
    offsets, spans = struct["ptr"][0][1, :n], struct["ptr"][0][2, :n]
    for piece, offset, span in zip(_lists(struct, n)[0], offsets, spans):
        flat[:, offset : offset + span] = _np(piece).reshape(-1, span)


def _embedding_backward(indices, grad, add, has_add, out, n, rows, cols, pad):
    padding = None if int(pad) < 0 else int(pad)
    _np(out)[...] = K.embedding_backward_reference(
        _np(grad), _np(indices), int(rows), padding, _np(add) if has_add else None
    )


KERNELS: dict[str, Callable] = {
    "embedding_backward": _embedding_backward,
    "tile_multi_tensor": _tile,
    "cast_multi_tensor": _cast,
    "attention_forward": _attention_forward,
    "attention_backward_rows": lambda *args: _attention_backward(*args, columns=False),
    "attention_backward_columns": lambda *args: _attention_backward(*args, columns=True),
    "layer_norm_forward": _layer_norm_forward,
    "layer_norm_backward": _layer_norm_backward,
    "layer_norm_param_grads_finish": _layer_norm_finish,
    "cross_entropy_forward": _cross_entropy_forward,
    "cross_entropy_backward": _cross_entropy_backward,
    "cross_entropy_mean": _cross_entropy_mean,
    "gelu_forward": _gelu_forward,
    "gelu_backward": _gelu_backward,
    "relu_backward": _relu_backward,
    "scaled_softmax_forward": _softmax_forward,
    "scaled_softmax_backward": _softmax_backward,
    "sum_squares_multi_tensor": _sum_squares,
    "clip_multi_tensor": _clip,
    "unscale_multi_tensor": _unscale,
    "adam_increment_steps": _adam_increment,
    "adam_multi_tensor": _adam,
    "sgd_multi_tensor": _sgd,
    "scale_inplace": _scale_inplace,
    "scale_cast": _scale_cast,
}


class Emulator:
    """The installed stand-in; ``counting()`` tallies the launches of the work inside it."""

    def __init__(self) -> None:
        self.launches: collections.Counter = collections.Counter()
        self.host_calls: collections.Counter = collections.Counter()

    def counting(self) -> _Counting:
        """Count the launches (returned by ``with``) and the host calls (``host_calls``)
        of the work inside the block."""
        self.launches = collections.Counter()
        self.host_calls = collections.Counter()
        return _Counting(self.launches, self.host_calls)

    @staticmethod
    def total(counts: collections.Counter) -> int:
        """Launches in ``counts``: everything but the host reads."""
        return sum(n for name, n in counts.items() if not name.startswith("host read"))


class _Counting:
    def __init__(self, counts: collections.Counter, host_calls: collections.Counter) -> None:
        self.counts, self.host_calls = counts, host_calls

    def __enter__(self) -> collections.Counter:
        global _counts, _host_calls
        _counts, _host_calls = self.counts, self.host_calls
        return self.counts

    def __exit__(self, *exc: Any) -> None:
        global _counts, _host_calls
        _counts = _host_calls = None


def _launch(fn: Any, grid: tuple, block: int, args: tuple) -> None:
    source, expression = fn
    check_launch(source.code, expression, args)
    _check_devices(args)
    name = expression.partition("<")[0]
    _count(f"kernel {name}")
    KERNELS[name](*args)


def _launch_uncarried(fn: Any, grid: tuple, block: int, args: tuple) -> None:
    """The launch counted, not carried out: its outputs keep whatever they held. For
    timing dtrain's own host work per launch (``bench/host_cost.py``), not for results."""
    _count(f"kernel {fn[1].partition('<')[0]}")


def _launch_source(fn: Any, grid: tuple, block: int, args: tuple) -> None:
    """The launch carried out by the kernel's own CUDA C, compiled for the CPU."""
    source, expression = fn
    check_launch(source.code, expression, args)
    _check_devices(args)
    _count(f"kernel {expression.partition('<')[0]}")
    host_cuda.launch(source, expression, grid, block, args)


def _gemm_operand(array: Any, op: int, ld: int, shape: tuple, count: int, stride: int) -> Any:
    """One operand of a cuBLAS call read from memory as cuBLAS would: from ``array``'s
    first element, rows ``ld`` items apart for ``OP_N`` (columns for ``OP_T``), ``count``
    matrices ``stride`` items apart. So a plan's ops and leading dims are checked here,
    not just the arrays it names."""
    plain = _np(array)
    item = plain.itemsize
    rows, cols = shape
    stored_row = cols if op == cublas.OP_N else rows  # the elements of a row as it lies
    if ld < max(1, stored_row):  # cuBLAS's rule for a leading dimension
        raise ValueError(f"cuBLAS: leading dimension {ld} below {stored_row} (op {op})")
    steps = (ld * item, item) if op == cublas.OP_N else (item, ld * item)
    last = (rows - 1) * steps[0] + (cols - 1) * steps[1] + (count - 1) * stride * item
    owner = plain
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    start = plain.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
    if start + last + item > owner.nbytes:
        raise ValueError(f"cuBLAS: an operand of {shape} (ld {ld}) reads past its allocation")
    return np.lib.stride_tricks.as_strided(
        plain, (count, *shape), (stride * item, *steps), writeable=False
    )


def _gemm_product(p: Any, dtype: Any) -> np.ndarray:
    """Plan ``p``'s product, (count, m, n), in ``dtype`` (operands taken up to it first, as
    cuBLAS accumulates float16 in float32)."""
    a = _gemm_operand(p.a, p.op_a, p.ld_a, (p.m, p.k), p.count, p.stride_a)
    b = _gemm_operand(p.b, p.op_b, p.ld_b, (p.k, p.n), p.count, p.stride_b)
    return np.matmul(a, b, dtype=dtype)


def _gemm(p: Any, out: Any) -> None:
    """``runtime/cublas.gemm``: plan ``p``'s product written into ``out``."""
    _count("cuBLAS gemm")
    _check_devices((p.a, p.b, out))
    if not cublas.supports_out(p.a.dtype, out.dtype):
        raise ValueError(f"cuBLAS writes no {out.dtype} product of {p.a.dtype} operands")
    if not out.flags.c_contiguous or out.size != p.count * p.m * p.n:
        raise ValueError(f"gemm: out of shape {out.shape} does not hold the plan's product")
    _np(out).reshape(p.count, p.m, p.n)[...] = _gemm_product(p, out.dtype)


def _matmul_epilogue(p: Any, vector: Any, out: Any, epilogue: int) -> bool:
    """``runtime/cublaslt._run``: the product with its bias added or its row sums written,
    as if cuBLASLt took every case (on a GPU one it has no algorithm for falls back)."""
    _check_devices((p.a, p.b, vector, out))
    _count("cuBLASLt gemm + epilogue")
    if not out.flags.c_contiguous or out.size != p.m * p.n or p.count != 1:
        raise ValueError(f"cuBLASLt: out of shape {out.shape} does not hold the plan's product")
    product = _gemm_product(p, out.dtype)[0]
    if epilogue in (cublaslt.EPILOGUE_BIAS, cublaslt.EPILOGUE_RELU_BIAS):
        product += _np(vector)
        if epilogue == cublaslt.EPILOGUE_RELU_BIAS:
            np.maximum(product, 0, out=product)
    else:
        a = _gemm_operand(p.a, p.op_a, p.ld_a, (p.m, p.k), 1, 0)[0]
        _np(vector)[...] = a.sum(axis=1, dtype=vector.dtype)
    _np(out).reshape(p.m, p.n)[...] = product
    return True


def install(monkeypatch: Any, kernels: str = "references", devices: int = 1) -> Emulator:
    """Put the emulator in place for one test (``monkeypatch`` undoes it).

    ``kernels``: "references" carries each launch out with the kernel's numpy reference;
    "source" runs the kernel's CUDA C itself, compiled for the CPU (``host_cuda``);
    "uncarried" only counts each launch, leaving its outputs as they were (timing only).
    ``devices``: how many GPUs the process sees; it starts on device 0 with none selected.
    """
    launchers = {"references": _launch, "source": _launch_source, "uncarried": _launch_uncarried}
    if kernels not in launchers:
        raise ValueError(f"kernels={kernels!r}: pass one of {sorted(launchers)}")
    cupy = _module(devices)
    monkeypatch.setattr(_EmuDevice, "threads", threading.local())
    # a fresh process: no GPU selected, no seed waiting for one
    monkeypatch.setattr(device_selection, "_selected", None)
    monkeypatch.setattr(device_selection, "_by_placement", False)
    monkeypatch.setattr(random_state, "_cuda_seed", None)
    monkeypatch.setattr(random_state, "_seeded_devices", set())
    monkeypatch.setattr(backend, "_cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy", cupy)

    def scatter_add(target: Any, indices: Any, values: Any) -> None:
        _count("scatter_add")
        np.add.at(_np(target), _plain(indices), _plain(values))

    monkeypatch.setitem(sys.modules, "cupyx", types.SimpleNamespace(scatter_add=scatter_add))
    for module in KERNEL_MODULES:
        monkeypatch.setattr(module, "kernel", lambda source, expression: (source, expression))
        monkeypatch.setattr(module, "launch", launchers[kernels])
    # device state cached by the kernels is this emulator's own, and goes with it
    monkeypatch.setattr(K.build, "_done_counters", {})
    monkeypatch.setattr(cublas, "gemm", _gemm)
    monkeypatch.setattr(cublaslt, "_run", _matmul_epilogue)
    return Emulator()
