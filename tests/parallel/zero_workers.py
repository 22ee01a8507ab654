"""Worker functions for the ``ZeroRedundancyOptimizer`` tests (run by launcher.py in every
rank): ZeRO against the full optimizer, its state dicts, and ZeRO inside ``Join``."""

from __future__ import annotations

import numpy as np

import dtrain as dt
import dtrain.nn as nn
import dtrain.parallel as dist
from dtrain.distributed.optim import ZeroRedundancyOptimizer

OPTIMIZERS = {
    "adam": (dt.optim.Adam, {"lr": 0.01, "weight_decay": 0.01}),
    "sgd": (dt.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
}


def make_model() -> nn.Module:
    """The same MLP on every rank: parameters of 40, 8, 24, 3 and 3 elements."""
    dt.manual_seed(3)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3), nn.Linear(3, 1, bias=False))


def batch(rank: int, step: int) -> tuple[dt.Tensor, dt.Tensor]:
    rng = np.random.default_rng(100 * step + rank)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    return dt.tensor(x), dt.tensor(rng.standard_normal((4, 1)).astype(np.float32))


def params_of(model: nn.Module) -> list:
    return [p.tolist() for p in model.parameters()]


def parity(optimizer: str, steps: int, timeout: float = 30) -> dict:
    """Train the MLP with DDP + ZeRO and with DDP + the full optimizer on the same batches;
    return both final parameters and which parameters hold local optimizer state."""
    dist.init_process_group(timeout=timeout)
    rank = dist.get_rank()
    cls, options = OPTIMIZERS[optimizer]
    out: dict = {}
    models = [make_model(), make_model()]
    ddps = [dist.DistributedDataParallel(m) for m in models]
    zero = ZeroRedundancyOptimizer(models[0].parameters(), cls, **options)
    full = cls(models[1].parameters(), **options)
    for step in range(steps):
        x, t = batch(rank, step)
        for ddp, opt in zip(ddps, (zero, full)):
            opt.zero_grad()
            ((ddp(x) - t) ** 2).mean().backward()
            opt.step()
    index = {id(p): i for i, p in enumerate(models[0].parameters())}
    out["zero"], out["full"] = params_of(models[0]), params_of(models[1])
    out["state"] = sorted(index[id(p)] for p in zero.optim.state)
    out["local"] = sorted(index[id(p)] for g in zero.optim.param_groups for p in g["params"])
    out["all"] = sorted(index[id(p)] for g in zero.param_groups for p in g["params"])
    out["options"] = {k: v for k, v in zero.param_groups[0].items() if k != "params"}
    out["options"]["betas"] = list(out["options"].get("betas", ()))
    dist.destroy_process_group()
    return out


def _grads(params: list, step: int) -> None:
    """Set every parameter's gradient to the same values on every rank."""
    for i, p in enumerate(params):
        rng = np.random.default_rng(1000 * step + i)
        p.grad = dt.tensor(rng.standard_normal(p.shape).astype(np.float32))


def _train(params: list, opt: dt.optim.Optimizer, steps: range) -> None:
    for step in steps:
        _grads(params, step)
        opt.step()


def state_round_trip(path: str, to: int, timeout: float = 30) -> dict:
    """Steps with identical gradients on every rank (so ZeRO must equal the full Adam);
    consolidate on rank ``to``, save there, load into a new ZeRO and into a plain Adam on
    every rank; all three continue and must agree. A second param group is added midway."""
    dist.init_process_group(timeout=timeout)
    rank = dist.get_rank()
    out: dict = {"errors": []}
    models = [make_model() for _ in range(4)]
    extra = []  # added as a second group after two steps
    for _ in range(4):
        dt.manual_seed(5)
        extra.append(nn.Linear(2, 2))
    plist = [list(m.parameters()) for m in models]
    zero = ZeroRedundancyOptimizer(plist[0], dt.optim.Adam, lr=0.05, betas=(0.8, 0.9))
    full = dt.optim.Adam(plist[1], lr=0.05, betas=(0.8, 0.9))
    try:
        zero.state_dict()
    except RuntimeError as exc:
        out["errors"].append(str(exc))
    for step in range(2):
        _grads(plist[0], step)
        _grads(plist[1], step)
        zero.step()
        full.step()
    for opt, i in ((zero, 0), (full, 1)):
        opt.add_param_group({"params": list(extra[i].parameters()), "lr": 0.02})
        plist[i] += list(extra[i].parameters())
    for step in range(2, 4):
        for opt, i in ((zero, 0), (full, 1)):
            _grads(plist[i], step)
            opt.step()
    zero.consolidate_state_dict(to=to)
    if rank == to:
        state = zero.state_dict()
        out["state_keys"] = sorted(state["state"])
        reference = full.state_dict()
        out["same_format"] = _same(state, reference)
        dt.save(state, path)
    else:
        try:
            zero.state_dict()
        except RuntimeError as exc:
            out["errors"].append(str(exc))
    dist.barrier()
    loaded = dt.load(path)
    for i in (2, 3):
        plist[i] += list(extra[i].parameters())
        with dt.no_grad():
            for p, q in zip(plist[i], plist[0]):
                p.copy_(q)
    zero2 = ZeroRedundancyOptimizer(
        [{"params": plist[2][:5]}, {"params": plist[2][5:]}], dt.optim.Adam, lr=1.0
    )
    zero2.load_state_dict(loaded)
    plain = dt.optim.Adam([{"params": plist[3][:5]}, {"params": plist[3][5:]}], lr=1.0)
    plain.load_state_dict(loaded)
    out["loaded_lr"] = [g["lr"] for g in zero2.param_groups] + [
        g["lr"] for g in zero2.optim.param_groups
    ]
    own = {id(p) for p in zero2.optim.state}
    out["loaded_state"] = [i for i, p in enumerate(plist[2]) if id(p) in own]
    for opt, i in ((zero, 0), (full, 1), (zero2, 2), (plain, 3)):
        _train(plist[i], opt, range(4, 6))
    out["params"] = [[p.tolist() for p in plist[i]] for i in range(4)]
    dist.destroy_process_group()
    return out


def _same(a: dict, b: dict) -> bool:
    """Two optimizer state dicts with the same groups and state (float32 round-off)."""
    if a["param_groups"] != b["param_groups"] or sorted(a["state"]) != sorted(b["state"]):
        return False
    for key, values in a["state"].items():
        other = b["state"][key]
        if sorted(values) != sorted(other):
            return False
        for name, value in values.items():
            if isinstance(value, dt.Tensor):
                if not np.allclose(value.numpy(), other[name].numpy(), atol=1e-6, rtol=1e-5):
                    return False
            elif value != other[name]:
                return False
    return True


def join(counts: list, with_ddp: bool = True, timeout: float = 30) -> dict:
    """Uneven inputs inside ``Join([model, zero])`` (torch's tutorial pattern), or
    ``Join([zero])`` without DDP; return the final parameters and a probe all-reduce."""
    dist.init_process_group(timeout=timeout)
    rank = dist.get_rank()
    model = make_model()
    ddp = dist.DistributedDataParallel(model) if with_ddp else model
    zero = ZeroRedundancyOptimizer(model.parameters(), dt.optim.Adam, lr=0.01)
    joinables = [ddp, zero] if with_ddp else [zero]
    with dist.Join(joinables):
        for step in range(counts[rank]):
            x, t = batch(rank, step)
            zero.zero_grad()
            ((ddp(x) - t) ** 2).mean().backward()
            zero.step()
    probe = dt.tensor([float(rank + 1)])
    dist.all_reduce(probe)
    out = {"params": params_of(model), "probe": probe.tolist()}
    dist.destroy_process_group()
    return out
