"""Turning a list of samples into a batch: ``default_collate`` and ``default_convert``.

The rules are PyTorch's: tensors and numpy arrays are stacked along a new first dim,
Python floats become a float64 tensor (as in PyTorch, not dtrain's float32 default for
``dtrain.tensor``), ints an int64 tensor and bools a bool tensor, strings stay a list,
and containers are collated field by field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dtrain._tensor.creation import as_tensor, tensor
from dtrain._tensor.ops.shape import stack
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.dtypes import SUPPORTED

_SUPPORTED_KINDS = "biuf"


def _numpy_to_tensor(array: np.ndarray, what: str) -> Tensor:
    if array.dtype not in SUPPORTED:
        names = ", ".join(str(d) for d in SUPPORTED)
        raise TypeError(
            f"{what}: numpy dtype {array.dtype} has no dtrain tensor dtype; convert the "
            f"samples to one of {names}, or pass a collate_fn that handles them"
        )
    return wrap(array)


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_fields")


def default_collate(batch: Sequence) -> Any:
    """Stack a list of samples into a batch, recursing into tuples, lists and dicts.

    Tensors and numpy arrays are stacked (their shapes must match); numpy scalars, Python
    ints (int64), floats (float64, as in PyTorch) and bools (bool) become 1-D tensors;
    ``str`` and ``bytes`` stay a list; a dict gives a dict of collated values per key; a
    namedtuple a namedtuple of collated fields; any other tuple or list gives a *list* of
    collated fields (samples transposed), as PyTorch does.

    Args:
        batch: the samples, all of the same structure.

    Returns:
        The batch.

    Raises:
        TypeError: for a sample type it cannot batch; pass your own ``collate_fn``.
        RuntimeError: when list or tuple samples differ in length.
    """
    if len(batch) == 0:
        raise ValueError("default_collate: the batch is empty; a sampler yielded an empty batch")
    elem = batch[0]
    if isinstance(elem, Tensor):
        return stack(batch, 0)
    if isinstance(elem, np.ndarray):
        if elem.dtype.kind not in _SUPPORTED_KINDS:
            raise _unsupported(elem.dtype)
        return _numpy_to_tensor(np.stack(batch), "default_collate")
    if isinstance(elem, (np.bool_, np.number)):
        return _numpy_to_tensor(np.array(batch), "default_collate")
    if isinstance(elem, float):
        return as_tensor(np.array(batch, dtype=np.float64))
    if isinstance(elem, int):  # bools too: the dtype of the whole batch, as torch.tensor's
        return tensor(list(batch))
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, Mapping):
        keys = list(elem)
        for i, sample in enumerate(batch):
            if not isinstance(sample, Mapping) or set(sample) != set(keys):
                raise TypeError(
                    f"default_collate: sample {i} has keys "
                    f"{sorted(map(str, sample)) if isinstance(sample, Mapping) else sample!r} "
                    f"but sample 0 has {sorted(map(str, keys))}; every dict sample needs the "
                    "same keys"
                )
        collated = {key: default_collate([sample[key] for sample in batch]) for key in keys}
        try:
            return type(elem)(collated)
        except TypeError:  # a Mapping whose constructor takes something else
            return collated
    if isinstance(elem, Sequence):
        size = len(elem)
        if any(len(sample) != size for sample in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        fields = [default_collate(list(samples)) for samples in zip(*batch)]
        if _is_namedtuple(elem):
            return type(elem)(*fields)
        return fields
    raise _unsupported(type(elem).__name__)


def _unsupported(found: Any) -> TypeError:
    return TypeError(
        "default_collate: batch must contain tensors, numpy arrays, numbers, bools, strings, "
        f"dicts or lists; found {found}. Pass collate_fn=... to the DataLoader to batch other "
        "types"
    )


def default_convert(data: Any) -> Any:
    """Turn numpy arrays and numpy scalars into tensors (sharing memory), recursing into
    dicts, tuples and lists; other values pass through. The ``DataLoader`` uses it when
    ``batch_size=None`` turns automatic batching off."""
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in _SUPPORTED_KINDS:
            return data
        return _numpy_to_tensor(data, "default_convert")
    if isinstance(data, (np.bool_, np.number)):
        return _numpy_to_tensor(np.array(data), "default_convert")
    if isinstance(data, (str, bytes, Tensor)):
        return data
    if isinstance(data, Mapping):
        converted = {key: default_convert(value) for key, value in data.items()}
        try:
            return type(data)(converted)
        except TypeError:
            return converted
    if _is_namedtuple(data):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]  # as PyTorch: a tuple becomes a list
    if isinstance(data, Sequence):
        try:
            return type(data)([default_convert(d) for d in data])
        except TypeError:
            return [default_convert(d) for d in data]
    return data


__all__ = ["default_collate", "default_convert"]
