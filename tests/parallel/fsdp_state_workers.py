"""Worker functions for the FSDP checkpointing tests (run by launcher.py in every rank):
train, save the model and optimizer state (full, sharded, local), load them into a fresh
FSDP model at another world size (or a plain model) and train on; an FSDP unit inside a
plain parent module. Values cross processes as JSON (see ``encode``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from fsdp_workers import POLICIES, batch, loss_of, make_model, whole_batch

import dtrain as dt
import dtrain.nn as nn
import dtrain.parallel as dist
from dtrain.distributed.fsdp import (
    FullOptimStateDictConfig,
    FullStateDictConfig,
    ShardedOptimStateDictConfig,
    ShardedStateDictConfig,
    StateDictType,
)
from dtrain.distributed.fsdp import FullyShardedDataParallel as FSDP  # noqa: N817 - torch's idiom
from dtrain.parallel.sharded_tensor import ShardedTensor

KIND, LR = "tf", {"lr": 0.02, "weight_decay": 0.1}
FULL, SHARDED, LOCAL = (
    StateDictType.FULL_STATE_DICT,
    StateDictType.SHARDED_STATE_DICT,
    StateDictType.LOCAL_STATE_DICT,
)


# ---- JSON in and out ------------------------------------------------------------------------
def encode(value):
    if isinstance(value, ShardedTensor):
        local = value.local_tensor().numpy().tolist()
        return {"sharded": list(value.shape), "offset": value.offset, "local": local}
    if isinstance(value, dt.Tensor):
        return {"tensor": value.numpy().tolist(), "shape": list(value.shape)}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def decode(value):
    if isinstance(value, dict) and "sharded" in value:
        local = dt.tensor(np.asarray(value["local"], dtype=np.float32).reshape(-1))
        return ShardedTensor(local, tuple(value["sharded"]), value["offset"])
    if isinstance(value, dict) and "tensor" in value:
        array = np.asarray(value["tensor"], dtype=np.float32).reshape(value["shape"])
        return dt.tensor(array)
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def fill(target: ShardedTensor, pieces: list) -> None:
    """A checkpoint reader: ``target``'s range filled from the saved ranks' pieces."""
    lo = target.offset
    hi = lo + target.local_tensor().numel()
    local = target.local_tensor().numpy()
    covered = np.zeros(hi - lo, dtype=bool)
    for piece in pieces:
        a = max(lo, piece.offset)
        b = min(hi, piece.offset + piece.local_tensor().numel())
        if a < b:
            local[a - lo : b - lo] = piece.local_tensor().numpy()[
                a - piece.offset : b - piece.offset
            ]
            covered[a - lo : b - lo] = True
    assert covered.all(), "the saved pieces do not cover the range"


def as_lists(state: dict) -> dict:
    return {k: v.numpy().tolist() for k, v in state.items()}


# ---- training ---------------------------------------------------------------------------
def build(seed: int = 3):
    model = FSDP(make_model(KIND, seed), auto_wrap_policy=POLICIES["module"])
    return model, dt.optim.AdamW(model.parameters(), **LR)


def train(model, opt, steps: range, data) -> None:
    for step in steps:
        x, t = data(step)
        opt.zero_grad()
        loss_of(KIND, model(x), t).backward()
        opt.step()


def plain_reference(first: int, world_first: int, then: int, world_then: int):
    """The plain model trained ``first`` steps on ``world_first`` ranks' data, then
    ``then`` more on ``world_then`` ranks' (the uninterrupted run)."""
    plain = make_model(KIND)
    opt = dt.optim.AdamW(plain.parameters(), **LR)
    train(plain, opt, range(first), lambda s: whole_batch(KIND, world_first, s))
    if then:
        train(plain, opt, range(first, first + then), lambda s: whole_batch(KIND, world_then, s))
    return plain, opt


def plain_optim_by_name(plain, opt) -> dict:
    """The plain optimizer's state dict keyed by parameter names (as FSDP's full one)."""
    names = [n for n, _ in plain.named_parameters()]
    osd = opt.state_dict()
    state = {names[i]: v for i, v in osd["state"].items()}
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in osd["param_groups"]]
    return {"state": state, "param_groups": groups}


def by_index(plain, named_osd: dict) -> dict:
    """A full optimizer state dict (keyed by names) for the plain model's optimizer."""
    index = {n: i for i, (n, _) in enumerate(plain.named_parameters())}
    state = {index[n]: v for n, v in named_osd["state"].items()}
    # a plain optimizer matches a group's entries by position: its own (model) order
    groups = [
        {**g, "params": sorted(index[n] for n in g["params"])} for g in named_osd["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


# ---- the workers ------------------------------------------------------------------------
def save(steps: int) -> dict:
    """Train ``steps`` steps; every form of the state; the full optimizer state against
    the plain optimizer's; a LOCAL state dict round trip at this world size."""
    dist.init_process_group(timeout=60)
    rank = dist.get_rank()
    model, opt = build()
    train(model, opt, range(steps), lambda s: batch(KIND, rank, s))
    out: dict = {}
    with FSDP.state_dict_type(model, FULL, FullStateDictConfig(), FullOptimStateDictConfig()):
        out["full_model"] = encode(model.state_dict())
        out["full_optim"] = encode(FSDP.optim_state_dict(model, opt))
    config = FullOptimStateDictConfig(rank0_only=True)
    with FSDP.state_dict_type(model, FULL, None, config):
        out["rank0_optim_keys"] = list(FSDP.optim_state_dict(model, opt))
    out["legacy_full_optim"] = encode(FSDP.full_optim_state_dict(model, opt, rank0_only=False))
    sharded = (ShardedStateDictConfig(), ShardedOptimStateDictConfig())
    with FSDP.state_dict_type(model, SHARDED, *sharded):
        sd, osd = model.state_dict(), FSDP.optim_state_dict(model, opt)
        out["sharded_model"], out["sharded_optim"] = encode(sd), encode(osd)
        out["sharded_types"] = sorted({type(v).__name__ for v in sd.values()})
    with FSDP.state_dict_type(model, LOCAL):
        local = model.state_dict()
        out["local_model"] = encode(local)
        out["local_keys"] = list(local)
        fresh, _ = build(seed=7)
        with FSDP.state_dict_type(fresh, LOCAL):
            fresh.load_state_dict(local)
    out["local_round_trip"] = [as_lists(fresh.state_dict()), as_lists(model.state_dict())]
    plain, plain_opt = plain_reference(steps, dist.get_world_size(), 0, 0)
    out["plain_optim"] = encode(plain_optim_by_name(plain, plain_opt))
    out["plain_keys"] = [n for n, _ in plain.named_parameters()]
    dist.destroy_process_group()
    return out


def resume(saved_path: str, form: str, first: int, then: int, saved_world: int) -> dict:
    """A fresh FSDP model (other seed) at this world size loads ``form`` ("full" or
    "sharded") of what ``save`` returned on each rank (a JSON list at ``saved_path``),
    trains ``then`` more steps; the errors for a LOCAL state dict of another world size, a
    sharded value of another range and a missing key."""
    saved = json.loads(Path(saved_path).read_text())
    dist.init_process_group(timeout=60)
    rank, world = dist.get_rank(), dist.get_world_size()
    model, opt = build(seed=11)
    out: dict = {}
    if form == "full":
        model.load_state_dict(decode(saved[0]["full_model"]))
        osd = FSDP.optim_state_dict_to_load(model, opt, decode(saved[0]["full_optim"]))
        opt.load_state_dict(osd)
    else:
        with FSDP.state_dict_type(model, SHARDED):
            target = model.state_dict()  # this rank's ranges, to be filled in place
            pieces = [decode(s["sharded_model"]) for s in saved]
            for key, value in target.items():
                if isinstance(value, ShardedTensor):
                    fill(value, [p[key] for p in pieces])
                else:
                    target[key] = pieces[0][key]
            model.load_state_dict(target)
            saved_osd = [decode(s["sharded_optim"]) for s in saved]
            state = {}
            for fqn, entry in saved_osd[0]["state"].items():
                state[fqn] = {}
                for name, value in entry.items():
                    if isinstance(value, ShardedTensor):
                        template = target[fqn]
                        local = dt.zeros(template.local_tensor().numel())
                        value = ShardedTensor(local, template.shape, template.offset)
                        fill(value, [o["state"][fqn][name] for o in saved_osd])
                    state[fqn][name] = value
            full_osd = {"state": state, "param_groups": saved_osd[0]["param_groups"]}
            opt.load_state_dict(FSDP.optim_state_dict_to_load(model, opt, full_osd))
            out["errors"] = errors(model, opt, saved, target, full_osd)
    train(model, opt, range(first, first + then), lambda s: batch(KIND, rank, s))
    out["fsdp"] = as_lists(model.state_dict())
    plain, _ = plain_reference(first, saved_world, then, world)
    out["plain"] = as_lists(plain.state_dict())
    if world == 1 and form == "full":  # the full form loads into the plain model too
        other = make_model(KIND, seed=11)
        other.load_state_dict(decode(saved[0]["full_model"]))
        other_opt = dt.optim.AdamW(other.parameters(), **LR)
        other_opt.load_state_dict(by_index(other, decode(saved[0]["full_optim"])))
        train(other, other_opt, range(first, first + then), lambda s: whole_batch(KIND, 1, s))
        out["plain_loaded"] = as_lists(other.state_dict())
    dist.destroy_process_group()
    return out


def errors(model, opt, saved: list, target: dict, saved_osd: dict) -> dict:
    """Each error's type and message."""
    rank = dist.get_rank()
    found = {}

    def catch(name, fn):
        try:
            fn()
            found[name] = None
        except Exception as exc:
            found[name] = [type(exc).__name__, str(exc)]

    def local_other_world():
        with FSDP.state_dict_type(model, LOCAL):
            model.load_state_dict(decode(saved[min(rank, len(saved) - 1)]["local_model"]))

    def other_range():
        model.load_state_dict(decode(saved[min(rank, len(saved) - 1)]["sharded_model"]))

    def missing_key():
        cut = dict(target)
        del cut["blocks.1.fc1.weight"]
        model.load_state_dict(cut)

    def missing_optim_key():
        state = dict(saved_osd["state"])
        del state["blocks.0.proj.weight"]
        FSDP.optim_state_dict_to_load(model, opt, {**saved_osd, "state": state})

    catch("local_other_world", local_other_world)
    catch("other_range", other_range)
    catch("missing_key", missing_key)
    catch("missing_optim_key", missing_optim_key)
    return found


class Parent(nn.Module):
    """A plain module holding an FSDP unit and a plain layer."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.fsdp = FSDP(make_model(KIND, seed), auto_wrap_policy=POLICIES["module"])
        dt.manual_seed(seed + 1)
        self.extra = nn.Linear(5, 3)

    def forward(self, x):
        return self.extra(self.fsdp(x))


def plain_parent() -> dict:
    """An FSDP unit in a plain parent: the parent's state dict (full, sharded) holds the
    original keys under the child's name and loads back; optimizer state dicts too."""
    dist.init_process_group(timeout=60)
    rank = dist.get_rank()
    parent, other = Parent(3), Parent(5)
    opt = dt.optim.AdamW(parent.parameters(), **LR)
    x, _ = batch(KIND, rank, 0)
    opt.zero_grad()
    parent(x).pow(2).mean().backward()
    opt.step()
    out: dict = {"full": as_lists(parent.state_dict())}
    out["child_full"] = as_lists(parent.fsdp.state_dict())
    out["plain_keys"] = list(make_model(KIND).state_dict())
    result = other.load_state_dict(parent.state_dict())
    out["load_result"] = [list(result.missing_keys), list(result.unexpected_keys)]
    out["loaded"] = as_lists(other.state_dict())
    osd = FSDP.optim_state_dict(parent, opt)
    out["optim_keys"] = list(osd["state"])
    out["optim_group"] = osd["param_groups"][0]["params"]
    opt2 = dt.optim.AdamW(other.parameters(), **LR)
    opt2.load_state_dict(FSDP.optim_state_dict_to_load(other, opt2, osd))
    out["optim_reloaded"] = encode(FSDP.optim_state_dict(other, opt2)) == encode(osd)
    with FSDP.state_dict_type(parent, SHARDED):
        sharded = parent.state_dict()
        out["sharded_keys"] = list(sharded)
        out["sharded_types"] = {k: type(v).__name__ for k, v in sharded.items()}
        with FSDP.state_dict_type(other, SHARDED):
            other.load_state_dict(sharded)  # the same world size: the ranges match
    out["sharded_loaded"] = as_lists(other.state_dict())
    dist.destroy_process_group()
    return out
