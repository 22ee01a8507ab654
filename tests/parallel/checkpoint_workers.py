"""Worker functions for activation checkpointing under DDP (run by launcher.py in every
rank): a segment with tuple outputs recomputed once, each parameter ready once."""

from __future__ import annotations

import time

import numpy as np

import dtrain as dt
import dtrain.nn as nn
import dtrain.parallel as dist
from dtrain.utils.checkpoint import checkpoint


class _Net(nn.Module):
    def __init__(self, ck: bool) -> None:
        super().__init__()
        dt.manual_seed(0)
        self.lin = nn.Linear(4, 4).double()
        self.head = nn.Linear(4, 2).double()
        self.ck = ck

    def segment(self, h: dt.Tensor) -> tuple:
        if dt.is_grad_enabled() and self.ck:
            time.sleep(0.2)  # a large segment: the all-reduce of an early bucket may start
        a = self.lin(h)
        return a, {"t": (a.tanh(), self.head(a))}

    def forward(self, x: dt.Tensor) -> dt.Tensor:
        a, d = checkpoint(self.segment, x) if self.ck else self.segment(x)
        b, c = d["t"]
        return a.sum() + (b**2).sum() + (c * c).sum()


def _data(rank: int) -> dt.Tensor:
    return dt.tensor(np.random.default_rng(rank).standard_normal((3, 4)))


def tuple_outputs() -> dict:
    """Gradients after one backward of the plain and the checkpointed model under DDP, the
    reference (the average of both ranks' local gradients), and how often each parameter's
    gradient was accumulated."""
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    reference = []
    for r in range(world):
        local = _Net(False)
        local(_data(r)).backward()
        reference.append([p.grad.numpy() for p in local.parameters()])
    result = {"reference": [np.mean(g, axis=0).tolist() for g in zip(*reference)]}
    for ck in (False, True):
        net = _Net(ck)
        counts = [0] * len(list(net.parameters()))
        for i, p in enumerate(net.parameters()):
            p.register_post_accumulate_grad_hook(
                lambda _, i=i, counts=counts: counts.__setitem__(i, counts[i] + 1)
            )
        model = dist.DistributedDataParallel(net, bucket_cap_mb=0.0001)  # a bucket each
        model(_data(rank)).backward()
        result["ckpt" if ck else "plain"] = [p.grad.numpy().tolist() for p in net.parameters()]
        result["counts_ckpt" if ck else "counts_plain"] = counts
    dist.destroy_process_group()
    return result
