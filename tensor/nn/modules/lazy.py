"""Lazy modules: layers whose input size their first forward decides (PyTorch's
``LazyModuleMixin``): ``LazyLinear``, ``LazyConv1d/2d/3d``, ``LazyConvTranspose1d/2d/3d``,
``LazyBatchNorm1d/2d/3d`` and ``LazyInstanceNorm1d/2d/3d``.

Until then their parameters and buffers are ``UninitializedParameter`` /
``UninitializedBuffer`` placeholders without a shape. A forward pre-hook materializes them
from the first input, runs the layer's usual initialisation, removes itself and turns the
module into its ``cls_to_become`` (``LazyLinear`` becomes ``Linear``). Build the optimizer,
and wrap in DDP, after that first forward.
"""

from __future__ import annotations

from typing import Any

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.creation import zeros
from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.modules.conv import Conv1d, Conv2d
from dtrain._tensor.nn.modules.conv3d import Conv3d, ConvTranspose3d
from dtrain._tensor.nn.modules.conv_transpose import ConvTranspose1d, ConvTranspose2d
from dtrain._tensor.nn.modules.linear import Linear
from dtrain._tensor.nn.modules.normalization import (
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
)
from dtrain._tensor.parameter import UninitializedBuffer, UninitializedParameter, is_lazy
from dtrain._tensor.tensor import Tensor


class LazyModuleMixin:
    """Mixed in before a layer class: its parameters take their shapes on the first
    forward (``initialize_parameters``), and the module then becomes ``cls_to_become``."""

    cls_to_become: type | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._initialize_hook = self.register_forward_pre_hook(
            self._infer_parameters, with_kwargs=True
        )

    def initialize_parameters(self, *args: Any, **kwargs: Any) -> None:
        """Materialize the parameters from the first forward's arguments."""
        raise NotImplementedError(
            f"initialize_parameters is not implemented for {type(self).__name__}"
        )

    def has_uninitialized_params(self) -> bool:
        """Whether a parameter or buffer of this module still has no shape."""
        return any(is_lazy(t) for t in (*self._parameters.values(), *self._buffers.values()))

    def _may_reset(self) -> bool:
        # The base class's __init__ calls reset_parameters before the hook exists: skip it
        # there (a placeholder layer), and while placeholders remain.
        return "_initialize_hook" in self.__dict__ and not self.has_uninitialized_params()

    def _infer_parameters(self, module: Module, args: tuple, kwargs: dict) -> None:
        with no_grad():
            module.initialize_parameters(*args, **kwargs)
        if module.has_uninitialized_params():
            raise RuntimeError(
                f"{type(module).__name__} has not been fully initialized by its first forward; "
                "its initialize_parameters must materialize every placeholder"
            )
        module._initialize_hook.remove()
        del module._initialize_hook
        if module.cls_to_become is not None:
            module.__class__ = module.cls_to_become


class LazyLinear(LazyModuleMixin, Linear):
    """``Linear`` whose ``in_features`` is the last dim of its first input."""

    cls_to_become = Linear

    def __init__(
        self, out_features: int, bias: bool = True, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__(0, 0, False, device, dtype)
        self.weight = UninitializedParameter(device=device, dtype=dtype)
        self.out_features = out_features
        if bias:
            self.bias = UninitializedParameter(device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        if self._may_reset() and self.in_features != 0:
            super().reset_parameters()

    def initialize_parameters(self, input: Tensor, *args: Any, **kwargs: Any) -> None:
        if self.has_uninitialized_params():
            self.in_features = input.shape[-1]
            self.weight.materialize((self.out_features, self.in_features))
            if self.bias is not None:
                self.bias.materialize((self.out_features,))
            self.reset_parameters()
        if self.in_features == 0:  # materialised by a loaded state dict: check, then record
            if input.shape[-1] != self.weight.shape[-1]:
                raise ValueError(
                    f"LazyLinear: the input's last dim {input.shape[-1]} does not match the "
                    f"loaded weight's in_features {self.weight.shape[-1]}"
                )
            self.in_features = input.shape[-1]


class _LazyConvMixin(LazyModuleMixin):
    """PyTorch's ``_LazyConvXdMixin``, with ``LazyConvNd``'s constructor."""

    transposed = False
    spatial_dims = 2

    def __init__(
        self,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        base_args = (stride, padding, dilation, groups, False, padding_mode, device, dtype)
        super().__init__(groups, out_channels, kernel_size, *base_args)
        self._lazy_setup(out_channels, bias, device, dtype)

    def _lazy_setup(self, out_channels: int, bias: bool, device: Any, dtype: Any) -> None:
        # The base class was built with in_channels=groups (it refuses 0); PyTorch shows 0.
        self.in_channels = 0
        self.weight = UninitializedParameter(device=device, dtype=dtype)
        self.out_channels = out_channels
        if bias:
            self.bias = UninitializedParameter(device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        if self._may_reset() and self.in_channels != 0:
            super().reset_parameters()

    def initialize_parameters(self, input: Tensor, *args: Any, **kwargs: Any) -> None:
        if not self.has_uninitialized_params():
            return
        batched = self.spatial_dims + 2
        if input.ndim not in (batched - 1, batched):
            raise RuntimeError(
                f"Expected {batched - 1}D (unbatched) or {batched}D (batched) input to "
                f"{type(self).__name__}, but got input of size: {tuple(input.shape)}"
            )
        self.in_channels = input.shape[1] if input.ndim == batched else input.shape[0]
        if self.in_channels % self.groups:
            raise ValueError(
                f"{type(self).__name__}: the input has {self.in_channels} channels, which "
                f"groups={self.groups} does not divide"
            )
        if self.transposed:
            shape = (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        else:
            shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.weight.materialize(shape)
        if self.bias is not None:
            self.bias.materialize((self.out_channels,))
        self.reset_parameters()


class _LazyConvTransposeMixin(_LazyConvMixin):
    transposed = True

    def __init__(
        self,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        output_padding: Any = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Any = 1,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        base_args = (stride, padding, output_padding, groups, False, dilation, padding_mode)
        # Past _LazyConvMixin's constructor, to LazyModuleMixin's and the layer's.
        super(_LazyConvMixin, self).__init__(
            groups, out_channels, kernel_size, *base_args, device, dtype
        )
        self._lazy_setup(out_channels, bias, device, dtype)


class LazyConv1d(_LazyConvMixin, Conv1d):
    """``Conv1d`` whose ``in_channels`` is the channel dim of its first input."""

    cls_to_become, spatial_dims = Conv1d, 1


class LazyConv2d(_LazyConvMixin, Conv2d):
    """``Conv2d`` whose ``in_channels`` is the channel dim of its first input."""

    cls_to_become, spatial_dims = Conv2d, 2


class LazyConv3d(_LazyConvMixin, Conv3d):
    """``Conv3d`` whose ``in_channels`` is the channel dim of its first input."""

    cls_to_become, spatial_dims = Conv3d, 3


class LazyConvTranspose1d(_LazyConvTransposeMixin, ConvTranspose1d):
    """``ConvTranspose1d`` whose ``in_channels`` is the channel dim of its first input."""

    cls_to_become, spatial_dims = ConvTranspose1d, 1


class LazyConvTranspose2d(_LazyConvTransposeMixin, ConvTranspose2d):
    """``ConvTranspose2d`` whose ``in_channels`` is the channel dim of its first input."""

    cls_to_become, spatial_dims = ConvTranspose2d, 2


class LazyConvTranspose3d(_LazyConvTransposeMixin, ConvTranspose3d):
    """``ConvTranspose3d`` whose ``in_channels`` is the channel dim of its first input."""

    cls_to_become, spatial_dims = ConvTranspose3d, 3


class _LazyNormMixin(LazyModuleMixin):
    """PyTorch's ``_LazyNormBase``: as PyTorch, ``affine`` and ``track_running_stats``
    default to True for the lazy instance norms too."""

    def __init__(
        self,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(0, eps, momentum, False, False, device, dtype)
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = UninitializedParameter(device=device, dtype=dtype)
            if bias:
                self.bias = UninitializedParameter(device=device, dtype=dtype)
        if track_running_stats:
            self.running_mean = UninitializedBuffer(device=device, dtype=dtype)
            self.running_var = UninitializedBuffer(device=device, dtype=dtype)
            self.num_batches_tracked = zeros((), dtype="int64", device=device)

    def reset_parameters(self) -> None:
        """Running statistics reset, weight 1, bias 0 (once materialized)."""
        if not self._may_reset() or self.num_features == 0:
            return
        with no_grad():
            self.reset_running_stats()
            if self.weight is not None:
                self.weight.fill_(1.0)
            if self.bias is not None:
                self.bias.zero_()

    def _channel_dim(self, input: Tensor) -> int:
        return 1

    def initialize_parameters(self, input: Tensor, *args: Any, **kwargs: Any) -> None:
        if self.num_features == 0:  # also without placeholders (no affine, no statistics)
            self.num_features = input.shape[self._channel_dim(input)]
        if not self.has_uninitialized_params():
            return
        for tensor in (self.weight, self.bias, self.running_mean, self.running_var):
            if is_lazy(tensor):
                tensor.materialize((self.num_features,))
        self.reset_parameters()


class _LazyInstanceNormMixin(_LazyNormMixin):
    def _channel_dim(self, input: Tensor) -> int:
        # Unlike PyTorch (dim 1 always), an unbatched input's channels are its dim 0.
        return 0 if input.ndim == self.expected_dims[-1] - 1 else 1


class LazyBatchNorm1d(_LazyNormMixin, BatchNorm1d):
    """``BatchNorm1d`` whose ``num_features`` is dim 1 of its first input."""

    cls_to_become = BatchNorm1d


class LazyBatchNorm2d(_LazyNormMixin, BatchNorm2d):
    """``BatchNorm2d`` whose ``num_features`` is dim 1 of its first input."""

    cls_to_become = BatchNorm2d


class LazyBatchNorm3d(_LazyNormMixin, BatchNorm3d):
    """``BatchNorm3d`` whose ``num_features`` is dim 1 of its first input."""

    cls_to_become = BatchNorm3d


class LazyInstanceNorm1d(_LazyInstanceNormMixin, InstanceNorm1d):
    """``InstanceNorm1d`` whose ``num_features`` is the channel dim of its first input."""

    cls_to_become = InstanceNorm1d


class LazyInstanceNorm2d(_LazyInstanceNormMixin, InstanceNorm2d):
    """``InstanceNorm2d`` whose ``num_features`` is the channel dim of its first input."""

    cls_to_become = InstanceNorm2d


class LazyInstanceNorm3d(_LazyInstanceNormMixin, InstanceNorm3d):
    """``InstanceNorm3d`` whose ``num_features`` is the channel dim of its first input."""

    cls_to_become = InstanceNorm3d
