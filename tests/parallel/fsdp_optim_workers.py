"""Worker functions for the FSDP optimizer/model state round trips of models the main
checkpoint tests do not cover (run by launcher.py in every rank): 0-d parameters (first in a
unit, and a unit of only one), a frozen unit, SGD with momentum and several parameter groups,
Adam with amsgrad, NO_SHARD; and hooks of modules inside an FSDP model."""

from __future__ import annotations

import numpy as np
from fsdp_state_workers import as_lists, encode

import dtrain as dt
import dtrain.nn as nn
import dtrain.parallel as dist
from dtrain.distributed.fsdp import FullOptimStateDictConfig, ShardingStrategy, StateDictType
from dtrain.distributed.fsdp import FullyShardedDataParallel as FSDP  # noqa: N817 - torch's idiom


class Temperature(nn.Module):
    """A module whose only parameter is 0-d (wrapped as its own unit)."""

    def __init__(self) -> None:
        super().__init__()
        self.t = nn.Parameter(dt.tensor(0.8))

    def forward(self, x: dt.Tensor) -> dt.Tensor:
        return x * self.t


class Scaled(nn.Module):
    """A 0-d parameter first in the root unit, a 0-d-only unit and a frozen unit."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(dt.tensor(1.5))
        self.lin = nn.Linear(3, 4)
        self.frozen = nn.Linear(4, 4)
        self.temp = Temperature()
        self.head = nn.Linear(4, 2)

    def forward(self, x: dt.Tensor) -> dt.Tensor:
        h = self.frozen((self.lin(x) * self.scale).tanh())
        return self.temp(self.head(h))


def build(seed: int) -> nn.Module:
    dt.manual_seed(seed)
    model = Scaled()
    for p in model.frozen.parameters():
        p.requires_grad_(False)
    return model


def wrap(model: nn.Module, strategy: str) -> FSDP:
    kw = {"sharding_strategy": getattr(ShardingStrategy, strategy)}
    model.temp, model.head = FSDP(model.temp, **kw), FSDP(model.head, **kw)
    model.frozen = FSDP(model.frozen, **kw)
    return FSDP(model, **kw)


def optimizer(model: nn.Module, kind: str):
    """SGD: two groups (the head unit on its own lr); Adam: amsgrad, one group."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if kind == "adam":
        return dt.optim.Adam(trainable, lr=0.05, amsgrad=True)
    inner = model.module if isinstance(model, FSDP) else model
    head = {id(p) for p in inner.head.parameters()}
    groups = [
        {"params": [p for p in trainable if id(p) not in head], "lr": 0.1},
        {"params": [p for p in trainable if id(p) in head], "lr": 0.05},
    ]
    return dt.optim.SGD(groups, momentum=0.9, weight_decay=0.01)


def data(step: int) -> dt.Tensor:
    """The same batch on every rank: the averaged gradient is the plain model's."""
    rng = np.random.default_rng(step)
    return dt.tensor(rng.standard_normal((5, 3)).astype(np.float32))


def train(model, opt, steps: range) -> None:
    for step in steps:
        opt.zero_grad()
        model(data(step)).pow(2).mean().backward()
        opt.step()


def round_trip(kind: str, strategy: str, steps: int = 2) -> dict:
    """Train ``steps`` steps, save the full model and optimizer state, load both into a
    fresh FSDP model (and its optimizer, also without it: ``shard_full_optim_state_dict``),
    train on; summon_full_params(writeback=True) keeps a change on every rank."""
    dist.init_process_group(timeout=60)
    model = wrap(build(1), strategy)
    opt = optimizer(model, kind)
    train(model, opt, range(steps))
    sd = model.state_dict()
    config = FullOptimStateDictConfig(offload_to_cpu=True)
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, None, config):
        osd = FSDP.optim_state_dict(model, opt)
    out: dict = {"full_optim": encode(osd)}
    fresh = wrap(build(9), strategy)
    fresh.load_state_dict(sd)
    fresh_opt = optimizer(fresh, kind)
    loadable = FSDP.optim_state_dict_to_load(fresh, fresh_opt, osd)
    without = FSDP.shard_full_optim_state_dict(osd, fresh)
    # numbered as an optimizer on fresh.parameters() (the frozen unit too): compare in order
    out["same_without_optim"] = encode(list(without["state"].values())) == encode(
        list(loadable["state"].values())
    )
    fresh_opt.load_state_dict(loadable)
    out["reloaded_optim"] = encode(FSDP.optim_state_dict(fresh, fresh_opt)) == encode(osd)
    train(fresh, fresh_opt, range(steps, steps + 2))
    out["after"] = as_lists(fresh.state_dict())
    with FSDP.summon_full_params(fresh, writeback=True), dt.no_grad():
        fresh.module.lin.bias.add_(1.0)
    out["summoned"] = as_lists(fresh.state_dict())
    plain = build(1)
    plain_opt = optimizer(plain, kind)
    train(plain, plain_opt, range(steps))
    names = {id(p): n for n, p in plain.named_parameters()}
    order = [p for g in plain_opt.param_groups for p in g["params"]]
    plain_osd = plain_opt.state_dict()
    out["plain_optim"] = encode({names[id(order[i])]: v for i, v in plain_osd["state"].items()})
    train(plain, plain_opt, range(steps, steps + 2))
    out["plain_after"] = as_lists(plain.state_dict())
    dist.destroy_process_group()
    return out


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x: dt.Tensor) -> dt.Tensor:
        return self.b(self.a(x).tanh())


class Parent(nn.Module):
    """A plain parameter next to an FSDP child."""

    def __init__(self) -> None:
        super().__init__()
        dt.manual_seed(2)
        self.fsdp = FSDP(Two())
        self.extra = nn.Linear(2, 1)

    def forward(self, x: dt.Tensor) -> dt.Tensor:
        return self.extra(self.fsdp(x))


def hooks_and_copies() -> dict:
    """Keys a hook of a module inside an FSDP model adds lose the wrapper's name; the
    optimizer state dict holds copies, not the optimizer's live tensors."""
    dist.init_process_group(timeout=60)

    def add_scale(module, state, prefix, metadata):
        state[prefix + "scale"] = dt.ones(1)

    dt.manual_seed(1)
    plain = Two()
    plain.a.register_state_dict_post_hook(add_scale)
    dt.manual_seed(1)
    inner = Two()
    inner.a.register_state_dict_post_hook(add_scale)
    inner.b = FSDP(inner.b)
    model = FSDP(inner)
    out: dict = {"plain_keys": list(plain.state_dict()), "fsdp_keys": list(model.state_dict())}
    with FSDP.state_dict_type(model, StateDictType.SHARDED_STATE_DICT):
        out["sharded_keys"] = list(model.state_dict())
    parent = Parent()
    opt = dt.optim.Adam(parent.parameters(), lr=0.1)
    for step in range(2):
        opt.zero_grad()
        parent(data(step)).pow(2).mean().backward()
        opt.step()
        if step == 0:
            osd = FSDP.optim_state_dict(parent, opt)
            saved = {
                k: as_lists({n: v for n, v in s.items() if n != "step"})
                for k, s in osd["state"].items()
            }
    out["unchanged"] = {
        k: as_lists({n: v for n, v in s.items() if n != "step"}) == saved[k]
        for k, s in osd["state"].items()
    }
    dist.destroy_process_group()
    return out
