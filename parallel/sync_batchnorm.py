"""``SyncBatchNorm``: batch statistics over the whole global batch, not each rank's shard.

Forward all-reduces each channel's (sum, sum of squares, count); backward all-reduces
(sum of dL/dx̂, sum of dL/dx̂ · x̂). Both are collectives: every rank runs them, in step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.modules.normalization import _BatchNorm
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.parallel import api, collectives
from dtrain.parallel.reduce_op import ReduceOp
from dtrain.runtime.backend import get_array_module


def _all_reduce_sum(array: Any, group: Any) -> Any:
    collectives.all_reduce(wrap(array), ReduceOp.SUM, group=group)
    return array


class SyncBatchNormOp(Op):
    def forward(
        self, x: Any, weight: Any, bias: Any, *, mean: Any, rstd: Any, count: int, group: Any
    ) -> Any:
        self.axes = (0, *range(2, x.ndim))
        self.rstd, self.count, self.group = rstd, count, group
        self.xhat = (x - mean) * rstd
        self.weight = weight
        out = self.xhat if weight is None else self.xhat * weight
        return out if bias is None else out + bias

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        needs = self.needs_input_grad
        grad_xhat = grad if self.weight is None else grad * self.weight
        channels = self.xhat.shape[1]
        local = xp.concatenate(
            [
                grad_xhat.sum(axis=self.axes).reshape(-1),
                (grad_xhat * self.xhat).sum(axis=self.axes).reshape(-1),
            ]
        )
        totals = _all_reduce_sum(local.astype(np.float64), self.group)
        shape = (1, channels) + (1,) * (grad.ndim - 2)
        mean_g = (totals[:channels] / self.count).astype(grad.dtype).reshape(shape)
        mean_gx = (totals[channels:] / self.count).astype(grad.dtype).reshape(shape)
        grad_x = self.rstd * (grad_xhat - mean_g - self.xhat * mean_gx) if needs[0] else None
        grad_w = (grad * self.xhat).sum(axis=self.axes, keepdims=True) if needs[1] else None
        grad_b = grad.sum(axis=self.axes, keepdims=True) if needs[2] else None
        return grad_x, grad_w, grad_b


class SyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics span every rank of ``process_group``.

    Outside training, with one rank, or without an initialised process group, it is plain
    batch normalisation."""

    expected_dims = (2, 3, 4, 5)

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Any = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype
        )
        self.process_group = process_group

    def forward(self, input: Tensor) -> Tensor:
        synced = (
            self.training and api.is_initialized() and (api.get_world_size(self.process_group) > 1)
        )
        if not synced:
            return super().forward(input)
        self._check_input(input)
        x = input._array
        xp = get_array_module(x)
        channels = x.shape[1]
        axes = (0, *range(2, x.ndim))
        local = xp.concatenate(
            [
                x.sum(axis=axes, dtype=np.float64).reshape(-1),
                (x.astype(np.float64) ** 2).sum(axis=axes).reshape(-1),
                xp.asarray([x.size // channels], dtype=np.float64),
            ]
        )
        totals = _all_reduce_sum(local, self.process_group)
        count = int(totals[-1])
        mean = totals[:channels] / count
        var = np.maximum(totals[channels : 2 * channels] / count - mean**2, 0.0)
        if self.track_running_stats:
            momentum = self.momentum
            with no_grad():
                self.num_batches_tracked.add_(1)
                if momentum is None:
                    momentum = 1.0 / self.num_batches_tracked.item()
                unbiased = var * (count / max(count - 1, 1))
                self.running_mean.mul_(1 - momentum).add_(wrap((mean * momentum).astype(x.dtype)))
                self.running_var.mul_(1 - momentum).add_(
                    wrap((unbiased * momentum).astype(x.dtype))
                )
        shape = (1, channels) + (1,) * (x.ndim - 2)
        rstd = (1 / xp.sqrt(var + self.eps)).astype(x.dtype).reshape(shape)
        w = None if self.weight is None else self.weight.reshape(shape)
        b = None if self.bias is None else self.bias.reshape(shape)
        return SyncBatchNormOp.apply(
            input,
            w,
            b,
            mean=mean.astype(x.dtype).reshape(shape),
            rstd=rstd,
            count=count,
            group=self.process_group,
        )

    @classmethod
    def convert_sync_batchnorm(cls, module: Module, process_group: Any = None) -> Module:
        """Replace every BatchNorm*d in ``module`` by a SyncBatchNorm with the same state."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            sync = cls(
                module.num_features,
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
                process_group,
            )
            sync.load_state_dict(module.state_dict())
            if module.affine:
                sync.weight, sync.bias = module.weight, module.bias  # keep the same Parameters
            sync.train(module.training)
            return sync
        for name, child in list(module.named_children()):
            module.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return module
