"""``Op``: the base of every differentiable operation.

An op class holds its forward and its backward side by side. ``forward`` receives arrays
(numpy or cupy) and returns one array; ``backward`` receives the gradient of that output
and returns one gradient (or None) per input. ``Op.apply`` runs forward on tensors and,
when autograd is on and an input requires grad, makes the op instance the output's
``grad_fn``: a node of the graph that backward walks.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from dtrain._tensor import float_warnings
from dtrain._tensor.autograd.grad_mode import state as _grad_state
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.device import device_of

_ndarray = np.ndarray
_generic = np.generic


class Op:
    """A differentiable operation and, once applied, its node in the autograd graph.

    Subclasses set ``reads_inputs`` / ``reads_output`` when backward needs the input or
    output values: the version of those tensors is recorded, and backward refuses to run
    if an in-place operation changed them since.
    """

    reads_inputs = False
    reads_output = False
    # backward_adding(): the op can add an input's gradient from other consumers into its
    # own in the same pass (on CUDA, in the same kernel) instead of the engine adding them.
    adds_pending = False
    # The arrays backward returns are its own: new (or views of its incoming gradient,
    # which the engine tells apart), one per input, kept by nothing else; the engine may
    # then keep them as a leaf's .grad and add into them in place. Not so for a user's
    # autograd.Function, whose backward may hand back an array it keeps.
    returns_own_grads = True
    # Node state, set by apply() when the graph is recorded.
    parents: tuple = ()
    needs_input_grad: tuple = ()
    saved_versions: tuple = ()
    tensor_hooks: list | None = None
    freed = False

    def forward(self, *arrays: Any, **options: Any) -> Any:
        raise NotImplementedError

    def backward(self, grad: Any) -> tuple:
        raise NotImplementedError

    def backward_adding(self, grad: Any, pending: tuple) -> tuple[tuple, tuple]:
        """``backward`` for ops with ``adds_pending``, given ``pending``: per input, None or
        ``(array, owned)``, the gradient other consumers have already sent that input, and
        whether it is the engine's alone (then it may be added to in place; otherwise it
        must not be written). Returns the gradients and, per input, whether its gradient
        already includes the pending one (then the engine takes it in its place)."""
        return self.backward(grad), (False,) * len(pending)

    @classmethod
    def apply(cls, *inputs: Any, **options: Any) -> Tensor:
        """Run the op on tensors (and plain scalars), recording the graph when needed."""
        op = cls()
        arrays = []
        parents = []  # the graph's links, gathered in the same pass: apply runs per op
        record = False
        array_type = None
        for x in inputs:
            if isinstance(x, Tensor):
                if x._base is not None and x._base.grad_fn is not x._base_fn:
                    _refresh_stale_view(x)
                array = x._array
                if array_type is None:
                    array_type = type(array)
                elif type(array) is not array_type:
                    _raise_device_mismatch(cls, inputs)
                arrays.append(array)
                if x._requires_grad:
                    record = True
                    parents.append(x if x.grad_fn is None else x.grad_fn)
                    continue
            else:
                arrays.append(x)
            parents.append(None)
        if warnings.filters is not float_warnings.installed_in:
            float_warnings.silence_numpy_float_warnings()  # lost to a catch_warnings block
        out = op.forward(*arrays, **options)
        if out.__class__ is not _ndarray and isinstance(out, _generic):
            out = np.asarray(out)  # numpy reductions return scalars; a tensor holds an array
        if not (record and _grad_state.enabled):
            return wrap(out)
        op.parents = tuple(parents)
        op.needs_input_grad = tuple([parent is not None for parent in parents])
        result = wrap(out, op)
        if cls.reads_inputs:
            versions = [(x._version, x._version[0]) for x in inputs if isinstance(x, Tensor)]
            if cls.reads_output:
                versions.append((result._version, 0))
            op.saved_versions = tuple(versions)
        elif cls.reads_output:
            op.saved_versions = ((result._version, 0),)
        return result

    def release(self) -> None:
        """Drop what backward saved (and the links to earlier nodes) once it has run."""
        self.__dict__.clear()
        self.freed = True

    def name(self) -> str:
        """The node's name as PyTorch's ``grad_fn.name()`` gives it (``AddBackward0``),
        shown in a tensor's repr: the op's class name (or PyTorch's name for that op, where
        they differ) and ``Backward0``. PyTorch numbers an op's overloads (``SumBackward1``
        for a sum over dims); dtrain writes 0 for all."""
        op = type(self).__name__
        return f"{_TORCH_NAMES.get(op, op)}Backward0"

    def __repr__(self) -> str:
        return f"<{self.name()}>"


# PyTorch's node name where an op's class is named otherwise (for the common form where
# one dtrain op stands for several of PyTorch's: Reshape is ViewBackward0 ...).
_TORCH_NAMES = {
    "AvgPool2d": "AvgPool2D",
    "AvgPool3d": "AvgPool3D",
    "BatchNorm": "NativeBatchNorm",
    "Cast": "ToCopy",
    "Cholesky": "LinalgCholeskyEx",
    "Conv2d": "Convolution",
    "ConvNd": "Convolution",
    "ConvTaps": "Convolution",
    "ConvTranspose2d": "Convolution",
    "ConvTransposeNd": "Convolution",
    "CrossEntropy": "NllLoss",
    "Determinant": "LinalgDet",
    "Dropout": "Mul",
    "FMax": "Fmax",
    "Inverse": "LinalgInvEx",
    "LayerNorm": "NativeLayerNorm",
    "Linear": "Addmm",
    "LogAddExp": "Logaddexp",
    "LogCumSumExp": "Logcumsumexp",
    "LogSumExp": "Logsumexp",
    "MatMul": "Mm",
    "MaxPool2d": "MaxPool2DWithIndices",
    "MaxPool3d": "MaxPool3DWithIndices",
    "Norm": "LinalgVectorNorm",
    "Reshape": "View",
    "SlogDet": "LinalgSlogdet",
    "SmoothL1": "SmoothL1Loss",
    "ToDevice": "ToCopy",
    "VectorNorm": "LinalgVectorNorm",
}


def _raise_device_mismatch(cls: type, inputs: tuple) -> None:
    devices = sorted({str(device_of(x._array)) for x in inputs if isinstance(x, Tensor)})
    raise RuntimeError(
        f"{cls.__name__}: expected all tensors on the same device, but found "
        f"{' and '.join(devices)}; move them to one device with .to(device) first"
    )


def _refresh_stale_view(view: Tensor) -> None:
    """A view whose base was changed in place since it was taken takes the base's new
    history (``stale_view``; imported here, rarely: it builds on this module)."""
    if _grad_state.enabled:
        from dtrain._tensor.autograd import stale_view

        stale_view.refresh(view)
