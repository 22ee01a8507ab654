"""Worker functions for the DDP ``join()`` tests (run by launcher.py in every rank): ranks
with different numbers of batches train a Linear model inside ``model.join()``."""

from __future__ import annotations

import contextlib

import numpy as np

import dtrain as dt
import dtrain.nn as nn
import dtrain.parallel as dist

LR = 0.1


def batches(rank: int, count: int) -> list:
    """Rank ``rank``'s ``count`` batches of (x (4, 3), t (4, 2)), the same on every run."""
    rng = np.random.default_rng(1000 + rank)
    return [
        (rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 2)))
        for _ in range(count)
    ]


def initial_parameters() -> tuple[np.ndarray, np.ndarray]:
    """The Linear(3, 2)'s starting weight and bias (every rank's, and the reference's)."""
    rng = np.random.default_rng(7)
    return rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal(2).astype(np.float32)


class Net(nn.Module):
    """Linear(3, 2), optionally followed by BatchNorm1d (buffers to broadcast) and an
    unused Linear (for find_unused_parameters)."""

    def __init__(self, batchnorm: bool, unused: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        weight, bias = initial_parameters()
        with dt.no_grad():
            self.fc.weight.copy_(dt.tensor(weight))
            self.fc.bias.copy_(dt.tensor(bias))
        self.bn = nn.BatchNorm1d(2) if batchnorm else None
        self.spare = nn.Linear(2, 2) if unused else None

    def forward(self, x: dt.Tensor) -> dt.Tensor:
        y = self.fc(x)
        return self.bn(y) if self.bn is not None else y


def train(
    counts: list,
    divide_by_initial_world_size: bool = True,
    throw_on_early_termination: bool = False,
    batchnorm: bool = False,
    find_unused_parameters: bool = False,
    eval_every_step: bool = False,
    eval_between: bool = False,
    fp16_hook: bool = False,
    timeout: float = 30,
) -> dict:
    """Train one epoch of this rank's ``counts[rank]`` batches inside ``model.join()``
    (every parameter in its own bucket); return the final parameters, buffers, the
    gradients of each step, and whether the ranks are in step afterwards.
    ``eval_between``: a no_grad forward between each training forward and its backward."""
    dist.init_process_group(timeout=timeout)
    rank = dist.get_rank()
    net = Net(batchnorm, find_unused_parameters)
    model = dist.DistributedDataParallel(
        net, bucket_cap_mb=1e-6, find_unused_parameters=find_unused_parameters
    )
    if fp16_hook:
        model.register_comm_hook(None, dist.fp16_compress_hook)
    opt = dt.optim.SGD(model.parameters(), lr=LR)
    result: dict = {"buckets": len(model._buckets), "error": None, "grads": []}
    try:
        with model.join(
            divide_by_initial_world_size=divide_by_initial_world_size,
            throw_on_early_termination=throw_on_early_termination,
        ):
            for x, t in batches(rank, counts[rank]):
                opt.zero_grad()
                loss = ((model(dt.tensor(x)) - dt.tensor(t, dtype=dt.float32)) ** 2).mean()
                if eval_between:
                    with dt.no_grad():
                        model(dt.tensor(x))
                loss.backward()
                result["grads"].append(net.fc.weight.grad.tolist())
                opt.step()
                if eval_every_step:
                    with dt.no_grad():
                        model(dt.tensor(x))
    except RuntimeError as exc:
        result["error"] = str(exc)
    result["weight"] = net.fc.weight.tolist()
    result["bias"] = net.fc.bias.tolist()
    result["buffers"] = [b.tolist() for b in net.buffers()]
    probe = dt.tensor([float(rank + 1)])
    dist.all_reduce(probe)  # every rank still in step: no collective left unanswered
    result["probe"] = probe.tolist()
    dist.destroy_process_group()
    return result


def not_entered(timeout: float = 30) -> dict:
    """A ``model.join()`` made but not yet entered: the DDP is not in join mode (its step
    runs plain DDP's collectives); entered, it is."""
    from dtrain.parallel import api

    dist.init_process_group(timeout=timeout)
    model = dist.DistributedDataParallel(nn.Linear(3, 2))
    group = api._group(None)
    x = dt.full((4, 3), float(dist.get_rank() + 1))
    out: dict = {"collectives": []}
    context = model.join()
    out["enabled_before"] = model._join_config.enable
    for inside in (False, True):
        start = group.seq
        if inside:
            with context:
                out["enabled_inside"] = model._join_config.enable
                model(x).sum().backward()
                out["collectives"].append(group.seq - start)
        else:
            model(x).sum().backward()
            out["collectives"].append(group.seq - start)
    out["enabled_after"] = model._join_config.enable
    dist.destroy_process_group()
    return out


def disagree(counts: list, timeout: float = 30) -> dict:
    """Rank 0 runs its first step under no_sync, the others do not: every rank raises the
    same RuntimeError at that step's exchange, and the group stays usable."""
    dist.init_process_group(timeout=timeout)
    rank = dist.get_rank()
    model = dist.DistributedDataParallel(nn.Linear(3, 1))
    out: dict = {"error": None}
    try:
        with model.join():
            for step in range(counts[rank]):
                local = rank == 0 and step == 0
                with model.no_sync() if local else contextlib.nullcontext():
                    model(dt.ones((2, 3))).sum().backward()
    except RuntimeError as exc:
        out["error"] = str(exc)
    probe = dt.tensor([1.0])
    dist.all_reduce(probe)
    out["probe"] = probe.tolist()
    dist.destroy_process_group()
    return out
