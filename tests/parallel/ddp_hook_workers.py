"""Worker functions for the DDP hook-lifetime tests (run by launcher.py in every rank):
which backward passes reduce, what a deep copy carries, re-wrapping, comm-hook futures."""

from __future__ import annotations

import copy
import gc
import warnings

import numpy as np

import dtrain as dt
import dtrain.nn as nn
import dtrain.parallel as dist


def _count_collectives(group: object) -> list:
    """Patch ``group.all_reduce`` to count its calls (DDP's buckets go through it)."""
    calls: list = []
    original = group.all_reduce

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(kwargs.get("name", "all_reduce"))
        return original(*args, **kwargs)

    group.all_reduce = counting
    return calls


def _linear() -> nn.Module:
    dt.manual_seed(0)
    return nn.Linear(2, 2)


def backward_paths(timeout: float = 30) -> dict:
    """Only a backward after a forward through the wrapper reduces: not one through
    ``ddp.module``, not the second of two backward passes after one forward (as torch's
    prepare_for_backward gates it)."""
    dist.init_process_group(timeout=timeout)
    rank = dist.get_rank()
    model = _linear()
    ddp = dist.DistributedDataParallel(model)
    calls = _count_collectives(dist.group.WORLD)
    x = dt.ones(1, 2) * (rank + 1)
    result = {}
    ddp(x).sum().backward()  # through the wrapper: one bucket all-reduce
    result["wrapper"] = len(calls)
    result["wrapper_grad"] = model.weight.grad.tolist()
    model.zero_grad()
    if rank == 0:  # rank 0 alone: a local step through .module must not reduce
        model(x).sum().backward()
    result["module_only"] = len(calls) - result["wrapper"]
    result["module_grad"] = model.weight.grad.tolist() if rank == 0 else None
    model.zero_grad()
    before = len(calls)
    out = ddp(x).sum()
    out.backward(retain_graph=True)
    out.backward()  # the second backward of one forward accumulates locally
    result["retained_second"] = len(calls) - before - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dt.no_grad():
            ddp(x)  # no grad: the next backward through .module stays local
    before = len(calls)
    if rank == 1:
        model(x).sum().backward()
    result["after_no_grad_forward"] = len(calls) - before
    probe = dt.tensor([float(rank)])
    dist.all_reduce(probe)  # every rank still in step
    result["probe"] = probe.tolist()
    dist.destroy_process_group()
    return result


def deep_copies(use_subgroup: bool = False, timeout: float = 30) -> dict:
    """A deep copy of a wrapped module is independent: no DDP hook acts on it, rank 0 alone
    can train it, and a subgroup's lock is never copied. A deep copy of the DDP wraps a
    copy of the module with the same group (no collective to make it)."""
    dist.init_process_group(timeout=timeout)
    rank = dist.get_rank()
    group = dist.new_group([0, 1]) if use_subgroup else None
    model = _linear()
    ddp = dist.DistributedDataParallel(model, process_group=group)
    ddp(dt.ones(1, 2)).sum().backward()  # a forward through the wrapper: hooks armed, then used
    ddp(dt.ones(1, 2))  # armed again, as an eval forward with grad on leaves them
    clone = copy.deepcopy(model)
    result = {"independent": clone.weight is not model.weight}
    if rank == 0:
        clone.zero_grad()
        clone(dt.ones(1, 2) * 3).sum().backward()
        result["clone_grad"] = clone.weight.grad.tolist()
    ddp_clone = copy.deepcopy(ddp) if rank == 1 else None  # one rank alone: no collective
    probe = dt.tensor([float(rank)])
    dist.all_reduce(probe, group=group)
    result["probe"] = probe.tolist()
    ddp_clone = copy.deepcopy(ddp)  # every rank: the copy reduces over the same group
    ddp_clone.zero_grad()
    ddp_clone(dt.ones(1, 2) * (rank + 1)).sum().backward()
    result["ddp_clone_grad"] = ddp_clone.module.weight.grad.tolist()
    result["ddp_clone_same_group"] = ddp_clone.group is ddp.group
    dist.destroy_process_group()
    return result


def rewrap(timeout: float = 30) -> dict:
    """Wrapping the same module again leaves one DDP's hooks on it: one all-reduce per
    backward, however often it was wrapped; the superseded wrapper refuses to run; a
    dropped DDP takes its hooks with it."""
    dist.init_process_group(timeout=timeout)
    rank = dist.get_rank()
    model = _linear()
    calls = _count_collectives(dist.group.WORLD)
    per_backward, grads = [], []
    wrappers = []
    for _ in range(3):
        wrappers.append(dist.DistributedDataParallel(model))
        before = len(calls)
        wrappers[-1](dt.ones(1, 2) * (rank + 1)).sum().backward()
        per_backward.append(len(calls) - before)
        grads.append(model.weight.grad.tolist())
        model.zero_grad()
    try:
        wrappers[0](dt.ones(1, 2))
        superseded = "no error"
    except RuntimeError as exc:
        superseded = str(exc)
    hooks_before = len(model.weight._hooks["post_accumulate"])
    wrappers.clear()
    gc.collect()
    hooks_after = len(model.weight._hooks["post_accumulate"])
    dist.destroy_process_group()
    return {
        "per_backward": per_backward,
        "grads": grads,
        "superseded": superseded,
        "hooks": [hooks_before, hooks_after],
    }


def future_hook(timeout: float = 30) -> dict:
    """torch's canonical comm hook: ``all_reduce(...).get_future().then(divide)``, in place
    and as a new tensor (DDP copies the future's value into the bucket)."""
    dist.init_process_group(timeout=timeout)
    rank, world = dist.get_rank(), dist.get_world_size()

    def in_place(state: object, bucket: dist.GradBucket) -> dist.Future:
        fut = dist.all_reduce(bucket.buffer(), group=state, async_op=True).get_future()
        return fut.then(lambda f: f.value()[0].div_(world))

    def new_tensor(state: object, bucket: dist.GradBucket) -> dist.Future:
        fut = dist.all_reduce(bucket.buffer(), group=state, async_op=True).get_future()
        return fut.then(lambda f: f.value()[0] / world)

    result = {}
    for name, hook in (("in_place", in_place), ("new_tensor", new_tensor)):
        model = _linear()
        ddp = dist.DistributedDataParallel(model)
        ddp.register_comm_hook(dist.group.WORLD, hook)
        ddp(dt.ones(1, 2) * (rank + 1)).sum().backward()
        result[name] = model.weight.grad.tolist()
        del ddp
    dist.destroy_process_group()
    return result


def eval_uneven_batches(broadcast_buffers: bool = True, timeout: float = 30) -> dict:
    """Eval under no_grad with ``pad=False`` shards (3 and 2 batches on 2 ranks) through the
    DDP wrapper of a model with buffers: only the first forward after training syncs the
    buffers, as in torch, so the ranks stay in step."""
    dist.init_process_group(timeout=timeout)
    rank = dist.get_rank()
    dt.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ddp = dist.DistributedDataParallel(model, broadcast_buffers=broadcast_buffers)
    ddp(dt.ones(4, 2) * (rank + 1) + dt.arange(8.0).reshape(4, 2)).sum().backward()
    ddp.eval()
    sampler = dist.DistributedSampler(list(range(5)), shuffle=False, pad=False)
    seen = dt.zeros(1)
    with dt.no_grad():
        for _ in sampler:
            ddp(dt.ones(1, 2))
            seen += 1
    dist.all_reduce(seen)
    mean = np.asarray(model[1].running_mean.tolist())
    dist.destroy_process_group()
    return {"seen": seen.tolist(), "running_mean": mean.tolist()}


def interrupted_steps(timeout: float = 30) -> dict:
    """An eval forward (no_grad) between a training forward and its backward keeps that
    backward's reduction; a backward that raises partway does not leave the next step
    unreduced; torch's comm hooks may call ``process_group.size()``."""
    dist.init_process_group(timeout=timeout)
    rank = dist.get_rank()
    model = _linear()
    ddp = dist.DistributedDataParallel(model)
    x = dt.ones(1, 2) * (rank + 1)
    result = {}
    loss = ddp(x).sum()
    with dt.no_grad():
        ddp(x)  # an eval forward in between
    loss.backward()
    result["eval_between"] = model.weight.grad.tolist()
    model.zero_grad()

    # Two layers, one bucket each: backward reduces the second layer's bucket, then raises
    # at the first layer's output (a simulated out-of-memory), before the first bucket.
    dt.manual_seed(1)
    first, second = nn.Linear(2, 3), nn.Linear(3, 1)

    class Failing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second, self.fail = first, second, False

        def forward(self, x: dt.Tensor) -> dt.Tensor:
            hidden = self.first(x)
            if self.fail:
                hidden.register_hook(lambda g: (_ for _ in ()).throw(RuntimeError("oom")))
            return self.second(hidden)

    two = Failing()
    wrapped = dist.DistributedDataParallel(two, bucket_cap_mb=1e-7)
    wrapped(x).sum().backward()
    result["normal"] = [p.grad.tolist() for p in two.parameters()]
    two.zero_grad()
    two.fail = True
    try:
        wrapped(x).sum().backward()
    except RuntimeError as error:
        result["raised"] = str(error)
    two.fail = False
    two.zero_grad()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped(x).sum().backward()  # the next step reduces again, from a clean slate
    result["after_raise"] = [p.grad.tolist() for p in two.parameters()]
    result["warned"] = [str(w.message) for w in caught if "raised before" in str(w.message)]

    def torch_style(process_group: object, bucket: object) -> object:
        # PyTorch's allreduce_hook: divide by process_group.size(), all-reduce, wait
        tensor = bucket.buffer()
        tensor.div_(process_group.size())
        return dist.all_reduce(tensor, group=process_group, async_op=True).get_future()

    ddp.register_comm_hook(dist.group.WORLD, torch_style)
    ddp(x).sum().backward()
    result["torch_hook"] = model.weight.grad.tolist()
    result["rank_call"] = [dist.group.WORLD.rank(), type(dist.get_rank()).__name__]
    dist.destroy_process_group()
    return result
