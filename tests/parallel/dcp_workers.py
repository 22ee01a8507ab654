"""Worker functions for the distributed checkpoint tests (run by launcher.py in every rank):
model + optimizer saved at one world size and loaded at another, ShardedTensor ranges
resharded, a save that fails on one rank, and training resumed from a checkpoint."""

from __future__ import annotations

import os

import numpy as np

import dtrain as dt
import dtrain.distributed.checkpoint as dcp
import dtrain.nn as nn
import dtrain.parallel as dist
from dtrain.distributed.checkpoint import ShardedTensor
from dtrain.distributed.checkpoint.state_dict import get_state_dict, set_state_dict


def make_model(seed: int = 3) -> nn.Module:
    dt.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def batch(rank: int, step: int) -> tuple[dt.Tensor, dt.Tensor]:
    rng = np.random.default_rng(100 * step + rank)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    return dt.tensor(x), dt.tensor(rng.standard_normal((4, 3)).astype(np.float32))


def wrap(model: nn.Module, ddp: bool) -> nn.Module:
    return dist.DistributedDataParallel(model) if ddp else model


def train(model: nn.Module, opt: dt.optim.Optimizer, steps: range, same: bool = False) -> None:
    """``same``: every rank the same batches (a plain model stays equal on all ranks)."""
    rank = 0 if same else dist.get_rank()
    for step in steps:
        x, t = batch(rank, step)
        opt.zero_grad()
        ((model(x) - t) ** 2).mean().backward()
        opt.step()


def snapshot(model: nn.Module, opt: dt.optim.Optimizer) -> dict:
    """Parameters, AdamW state (by index) and learning rate as lists."""
    state = opt.state_dict()
    return {
        "params": [p.tolist() for p in model.parameters()],
        "state": {
            str(i): {k: (v.tolist() if isinstance(v, dt.Tensor) else v) for k, v in s.items()}
            for i, s in state["state"].items()
        },
        "lr": state["param_groups"][0]["lr"],
    }


def save_trained(path: str, steps: int, ddp: bool = True) -> dict:
    """Train ``steps`` steps (DDP + AdamW), then save model, optimizer and the step."""
    dist.init_process_group(timeout=30)
    model = wrap(make_model(), ddp)
    opt = dt.optim.AdamW(model.parameters(), lr=0.02)
    train(model, opt, range(steps), same=not ddp)
    model_sd, optim_sd = get_state_dict(model, opt)
    meta = dcp.save({"model": model_sd, "optim": optim_sd, "step": steps}, checkpoint_id=path)
    out = snapshot(model, opt)
    out["files"] = sorted(os.listdir(path))
    out["world_size"] = meta["world_size"]
    dist.destroy_process_group()
    return out


def load_fresh(path: str, ddp: bool = True) -> dict:
    """A differently initialised model and an AdamW with another lr, loaded from ``path``."""
    dist.init_process_group(timeout=30)
    model = wrap(make_model(seed=11), ddp)
    opt = dt.optim.AdamW(model.parameters(), lr=0.5)
    model_sd, optim_sd = get_state_dict(model, opt)
    state = {"model": model_sd, "optim": optim_sd, "step": -1}
    dcp.load(state, storage_reader=dcp.FileSystemReader(path))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    out = snapshot(model, opt)
    out["step"] = state["step"]
    dist.destroy_process_group()
    return out


def resume(path: str, first: int, more: int, stop: bool) -> dict:
    """``stop``: train ``first`` steps and save; else load and train ``more`` steps (a new
    model and optimizer, as after a restart). ``path`` None: ``first + more`` at once."""
    dist.init_process_group(timeout=30)
    model = dist.DistributedDataParallel(make_model(seed=5 if stop or path is None else 9))
    opt = dt.optim.AdamW(model.parameters(), lr=0.02)
    if path is None:
        train(model, opt, range(first + more))
    elif stop:
        train(model, opt, range(first))
        model_sd, optim_sd = get_state_dict(model, opt)
        dcp.save({"model": model_sd, "optim": optim_sd, "step": first}, checkpoint_id=path)
    else:
        model_sd, optim_sd = get_state_dict(model, opt)
        state = {"model": model_sd, "optim": optim_sd, "step": 0}
        dcp.load(state, checkpoint_id=path)
        set_state_dict(model, opt, model_state_dict=model_sd, optim_state_dict=optim_sd)
        train(model, opt, range(state["step"], state["step"] + more))
    out = snapshot(model, opt)
    dist.destroy_process_group()
    return out


# ---- ShardedTensor ranges ------------------------------------------------------------------
SHAPES = {"w": (5, 7), "v": (4,)}


def full(name: str) -> np.ndarray:
    """The whole tensor ``name`` every rank takes its range of."""
    n = int(np.prod(SHAPES[name]))
    return (np.arange(n, dtype=np.float32) * (1.5 if name == "w" else -2.0)).reshape(SHAPES[name])


def sharded_save(path: str, ranges: dict) -> dict:
    """Each rank saves its ``ranges[name][rank]`` of ``w`` and ``v``, two replicated tensors
    and a plain value."""
    dist.init_process_group(timeout=30)
    rank = dist.get_rank()
    state = {"plain": {"epoch": 3, "betas": (0.9, 0.99)}, "rep": {}}
    for name, per_rank in ranges.items():
        lo, hi = per_rank[rank]
        state[name] = ShardedTensor(dt.tensor(full(name).reshape(-1)[lo:hi]), SHAPES[name], lo)
    state["rep"]["a"] = dt.arange(6.0).reshape(2, 3)
    state["rep"]["b"] = dt.arange(6.0).reshape(3, 2) + 10
    dcp.save(state, checkpoint_id=path)
    dist.destroy_process_group()
    return sorted(os.listdir(path))


def sharded_load(path: str, ranges: dict, bad_rank: int | None = None) -> dict:
    """Fill this rank's ``ranges[name][rank]`` (zeros to start with) from ``path``.
    ``bad_rank``: that rank asks for ``w`` with a wrong shape (every rank must raise)."""
    dist.init_process_group(timeout=30)
    rank = dist.get_rank()
    state: dict = {"plain": None, "rep": {"a": dt.zeros(2, 3), "b": dt.zeros(3, 2)}}
    for name, per_rank in ranges.items():
        lo, hi = per_rank[rank]
        shape = (7, 5) if rank == bad_rank and name == "w" else SHAPES[name]
        state[name] = ShardedTensor(dt.zeros(hi - lo), shape, lo)
    try:
        dcp.load(state, checkpoint_id=path)
    except (ValueError, RuntimeError) as exc:
        dist.destroy_process_group()
        return {"error": [type(exc).__name__, str(exc)]}
    out = {name: state[name].local_tensor().tolist() for name in ranges}
    out["rep"] = {k: v.tolist() for k, v in state["rep"].items()}
    out["plain"] = [state["plain"]["epoch"], list(state["plain"]["betas"])]
    out["tuple"] = isinstance(state["plain"]["betas"], tuple)
    dist.destroy_process_group()
    return out


# ---- a save that fails ---------------------------------------------------------------------
def failing_save(path: str, how: str) -> dict:
    """Save ``{"x": 1s}``; then save ``{"x": 2s}`` with rank 1 failing while it writes its
    file: ``how="raise"`` raises there, ``how="exit"`` kills the process."""
    import dtrain.parallel.checkpoint_save as checkpoint_save

    dist.init_process_group(timeout=10)
    rank = dist.get_rank()
    dcp.save({"x": dt.ones(4) * 1, "y": dt.ones(3)}, checkpoint_id=path)
    if rank == 1:
        real = checkpoint_save._write_rank_file

        def broken(*args, **kwargs):
            real(*args, **kwargs)  # the file is written, then the rank fails
            if how == "exit":
                os._exit(3)
            raise OSError(28, "No space left on device (injected)")

        checkpoint_save._write_rank_file = broken
    try:
        dcp.save({"x": dt.ones(4) * 2, "y": dt.ones(3) * 2}, checkpoint_id=path)
    except Exception as exc:
        return {"error": [type(exc).__name__, str(exc)]}
    return {"error": None}


# ---- FSDP ----------------------------------------------------------------------------------
def fsdp_resume(path: str, first: int, more: int, mode: str) -> dict:
    """As ``resume`` with FSDP (sharded state dicts): ``mode`` "save", "load" or "whole"."""
    from dtrain.distributed.fsdp import FullyShardedDataParallel as FSDP  # noqa: N817

    dist.init_process_group(timeout=30)
    model = FSDP(make_model(seed=5 if mode != "load" else 9))
    opt = dt.optim.AdamW(model.parameters(), lr=0.02)
    if mode == "whole":
        train(model, opt, range(first + more))
    elif mode == "save":
        train(model, opt, range(first))
        model_sd, optim_sd = get_state_dict(model, opt)
        dcp.save({"model": model_sd, "optim": optim_sd, "step": first}, checkpoint_id=path)
    else:
        model_sd, optim_sd = get_state_dict(model, opt)
        state = {"model": model_sd, "optim": optim_sd, "step": 0}
        dcp.load(state, checkpoint_id=path)
        set_state_dict(model, opt, model_state_dict=model_sd, optim_state_dict=optim_sd)
        train(model, opt, range(state["step"], state["step"] + more))
    from dtrain.distributed.fsdp import FullStateDictConfig, StateDictType

    config = FullStateDictConfig()
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, config):
        full_sd = model.state_dict()
    out = {"params": [full_sd[k].tolist() for k in sorted(full_sd)]}
    dist.destroy_process_group()
    return out


# ---- a save that fails in its first step ---------------------------------------------------
def step1_fails(path: str, how: str) -> dict:
    """Save ``{"w": 1s}``; then save again with rank 1's state dict failing in step 1:
    ``how="set"`` holds a set (TypeError), ``how="deep"`` a value nested too deep to encode
    (RecursionError). Returns each rank's error and the parent directory's listing."""
    dist.init_process_group(timeout=20)
    rank = dist.get_rank()
    dcp.save({"w": dt.ones(3)}, checkpoint_id=path)
    state: dict = {"w": dt.ones(3) * 2}
    if rank == 1 and how == "set":
        state["bad"] = {1, 2}
    elif rank == 1:
        deep: list = []
        for _ in range(5000):
            deep = [deep]
        state["bad"] = deep
    error = None
    try:
        dcp.save(state, checkpoint_id=path)
    except Exception as exc:
        error = [type(exc).__name__, str(exc)[:300]]
    dist.barrier()
    listing = sorted(os.listdir(os.path.dirname(path)))
    loaded = {"w": dt.zeros(3)}
    dcp.load(loaded, checkpoint_id=path)
    dist.destroy_process_group()
    return {"error": error, "listing": listing, "w": loaded["w"].tolist()}


def fsdp_frozen(full: bool) -> dict:
    """``ignore_frozen_params`` under FSDP: ``FSDP(Sequential(FSDP(frozen Linear), Linear))``;
    the state dict's keys with and without it."""
    from dtrain.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from dtrain.distributed.fsdp import FullyShardedDataParallel as FSDP  # noqa: N817

    dist.init_process_group(timeout=30)
    options = StateDictOptions(ignore_frozen_params=True, full_state_dict=full)
    dt.manual_seed(0)
    inner = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    for p in inner[0].parameters():
        p.requires_grad_(False)
    nested = FSDP(nn.Sequential(FSDP(inner[0]), inner[1]))
    keys = list(get_model_state_dict(nested, options=options))
    every = list(get_model_state_dict(nested, options=StateDictOptions(full_state_dict=full)))
    dist.destroy_process_group()
    return {"keys": keys, "every": every}
