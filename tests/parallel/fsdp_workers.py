"""Worker functions for the ``FullyShardedDataParallel`` tests (run by launcher.py in every
rank): FSDP against plain single-process training on the concatenated batch and against
DDP, gradient accumulation under ``no_sync``, and full state dicts."""

from __future__ import annotations

import contextlib
import functools
import math

import numpy as np

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
import dtrain.parallel as dist
from dtrain.distributed.fsdp import FullStateDictConfig, ShardingStrategy, StateDictType
from dtrain.distributed.fsdp import FullyShardedDataParallel as FSDP  # noqa: N817 - torch's idiom
from dtrain.distributed.fsdp.wrap import (
    ModuleWrapPolicy,
    size_based_auto_wrap_policy,
    transformer_auto_wrap_policy,
)

D, HIDDEN, VOCAB, CLASSES, SEQ = 8, 15, 11, 5, 4


class Block(nn.Module):
    """A pre-norm transformer block: 559 parameters (divisible by neither 2 nor 3). The
    qkv projection has no bias: a key bias gets a zero gradient (softmax ignores it), whose
    round-off noise Adam would scale up to a full step."""

    def __init__(self) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.proj = nn.Linear(D, 3 * D, bias=False), nn.Linear(D, D)
        self.fc1, self.fc2 = nn.Linear(D, HIDDEN), nn.Linear(HIDDEN, D)

    def forward(self, x: dt.Tensor) -> dt.Tensor:
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)
        attention = (q @ k.transpose(-2, -1) / math.sqrt(D)).softmax(-1)
        x = x + self.proj(attention @ v)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyTransformer(nn.Module):
    """Embedding, two blocks, a norm and a head; 149 parameters outside the blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, CLASSES)

    def forward(self, tokens: dt.Tensor) -> dt.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(1))


def make_model(kind: str, seed: int = 3) -> nn.Module:
    """The same model on every rank: ``mlp`` has parameters of 25, 42 and 16 elements."""
    dt.manual_seed(seed)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2)
        )
    return TinyTransformer()


POLICIES = {
    None: None,
    "size": functools.partial(size_based_auto_wrap_policy, min_num_params=20),
    "module": ModuleWrapPolicy({Block}),
    "transformer": functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={Block}),
}
OPTIMIZERS = {
    "sgd": (dt.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    "adamw": (dt.optim.AdamW, {"lr": 0.02, "weight_decay": 0.1}),
}


def batch(kind: str, rank: int, step: int, size: int = 3) -> tuple[dt.Tensor, dt.Tensor]:
    rng = np.random.default_rng(1000 * step + rank)
    if kind == "mlp":
        x = dt.tensor(rng.standard_normal((size, 4)).astype(np.float32))
        return x, dt.tensor(rng.standard_normal((size, 2)).astype(np.float32))
    tokens = dt.tensor(rng.integers(0, VOCAB, (size, SEQ)))
    return tokens, dt.tensor(rng.integers(0, CLASSES, size))


def loss_of(kind: str, output: dt.Tensor, target: dt.Tensor) -> dt.Tensor:
    if kind == "mlp":
        return ((output - target) ** 2).mean()
    return F.cross_entropy(output, target)


def whole_batch(kind: str, world: int, step: int, micro: int = 0) -> tuple:
    parts = [batch(kind, r + 100 * micro, step) for r in range(world)]
    return dt.cat([p[0] for p in parts]), dt.cat([p[1] for p in parts])


def as_lists(state: dict) -> dict:
    return {k: v.numpy().tolist() for k, v in state.items()}


def parity(
    kind: str,
    policy: str | None,
    optimizer: str,
    strategy: str,
    steps: int = 3,
    clip: float | None = None,
    sync: bool = False,
) -> dict:
    """Train the model three ways on the same data: plain on the concatenated batch (every
    rank, locally), FSDP and DDP on this rank's part; return their final states."""
    dist.init_process_group(timeout=60)
    rank, world = dist.get_rank(), dist.get_world_size()
    cls, options = OPTIMIZERS[optimizer]
    plain = make_model(kind)
    # sync_module_states: rank 0's model (plain's) reaches every rank from other seeds
    fsdp = FSDP(
        make_model(kind, seed=3 + rank if sync else 3),
        auto_wrap_policy=POLICIES[policy],
        sharding_strategy=ShardingStrategy[strategy],
        sync_module_states=sync,
    )
    ddp = dist.DistributedDataParallel(make_model(kind))
    opts = [cls(m.parameters(), **options) for m in (plain, fsdp, ddp)]
    norms: list = []  # per step: the norm plain training and FSDP clipped
    for step in range(steps):
        x, t = batch(kind, rank, step)
        xs_all, ts_all = whole_batch(kind, world, step)
        step_norms = []
        for model, opt, (inputs, target) in zip(
            (plain, fsdp, ddp), opts, ((xs_all, ts_all), (x, t), (x, t))
        ):
            opt.zero_grad()
            loss_of(kind, model(inputs), target).backward()
            if clip is not None:
                if model is fsdp:
                    step_norms.append(float(fsdp.clip_grad_norm_(clip)))
                else:
                    step_norms.append(float(nn.utils.clip_grad_norm_(model.parameters(), clip)))
            opt.step()
        norms.append(step_norms)
    out = {
        "plain": as_lists(plain.state_dict()),
        "fsdp": as_lists(fsdp.state_dict()),
        "ddp": as_lists(ddp.state_dict()),
        "initial": as_lists(make_model(kind).state_dict()),
        "shard_numels": [p.numel() for p in fsdp.parameters()],
        "unit_numels": [u._handle.numel for u in FSDP.fsdp_modules(fsdp) if u._handle],
        "units": len(FSDP.fsdp_modules(fsdp)),
        "norms": norms,
    }
    dist.destroy_process_group()
    return out


def accumulate(kind: str, policy: str | None, micro: int = 3, steps: int = 2) -> dict:
    """``micro`` micro-batches per step, all but the last under ``no_sync()``; plain
    training takes all of them (every rank's) as one batch."""
    dist.init_process_group(timeout=60)
    rank, world = dist.get_rank(), dist.get_world_size()
    plain, fsdp = make_model(kind), FSDP(make_model(kind), auto_wrap_policy=POLICIES[policy])
    opts = [dt.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (plain, fsdp)]
    for step in range(steps):
        for opt in opts:
            opt.zero_grad()
        for m in range(micro):
            x, t = batch(kind, rank + 100 * m, step)
            context = fsdp.no_sync() if m < micro - 1 else contextlib.nullcontext()
            with context:
                (loss_of(kind, fsdp(x), t) / micro).backward()
            if m < micro - 1:  # nothing reduced yet: the shards' gradients hold zeros
                assert not any(p.grad.numpy().any() for p in fsdp.parameters()), "no_sync reduced"
        xs = [whole_batch(kind, world, step, m) for m in range(micro)]
        xs_all, ts_all = dt.cat([x for x, _ in xs]), dt.cat([t for _, t in xs])
        loss_of(kind, plain(xs_all), ts_all).backward()
        for opt in opts:
            opt.step()
    out = {"plain": as_lists(plain.state_dict()), "fsdp": as_lists(fsdp.state_dict())}
    dist.destroy_process_group()
    return out


def state_round_trip(kind: str, policy: str | None) -> dict:
    """Full state dict on rank 0 only (offloaded), loaded into a plain model; a plain
    model's state loaded back into FSDP, which then trains as the plain one;
    summon_full_params with writeback."""
    dist.init_process_group(timeout=60)
    rank, world = dist.get_rank(), dist.get_world_size()
    fsdp = FSDP(make_model(kind), auto_wrap_policy=POLICIES[policy])
    opt = dt.optim.SGD(fsdp.parameters(), lr=0.1)
    x, t = batch(kind, rank, 0)
    loss_of(kind, fsdp(x), t).backward()
    opt.step()
    config = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
    with FSDP.state_dict_type(fsdp, StateDictType.FULL_STATE_DICT, config):
        saved = fsdp.state_dict()
    everyone = fsdp.state_dict()  # the default config again: every rank gets it
    out: dict = {"saved_keys": list(saved), "everyone": as_lists(everyone)}
    if rank == 0:
        plain = make_model(kind, seed=9)
        plain.load_state_dict(saved)
        out["plain_after_load"] = as_lists(plain.state_dict())
        out["plain_keys"] = list(make_model(kind).state_dict())
    # load another model's state into FSDP on every rank, then train both
    other = make_model(kind, seed=11)
    result = fsdp.load_state_dict(other.state_dict())
    out["load_result"] = [list(result.missing_keys), list(result.unexpected_keys)]
    out["loaded"] = as_lists(fsdp.state_dict())
    out["other"] = as_lists(other.state_dict())
    opts = [dt.optim.AdamW(m.parameters(), lr=0.02) for m in (other, fsdp)]
    for step in range(2):
        x, t = batch(kind, rank, step + 1)
        xs_all, ts_all = whole_batch(kind, world, step + 1)
        for model, o, (inputs, target) in zip((other, fsdp), opts, ((xs_all, ts_all), (x, t))):
            o.zero_grad()
            loss_of(kind, model(inputs), target).backward()
            o.step()
    out["trained_other"] = as_lists(other.state_dict())
    out["trained_fsdp"] = as_lists(fsdp.state_dict())
    with FSDP.summon_full_params(fsdp):
        first = next(iter(p for n, p in fsdp.named_parameters() if not n.endswith("_flat_param")))
        with dt.no_grad():
            first.mul_(2.0)
        out["summoned_names"] = [n for n, _ in fsdp.named_parameters()]
    out["after_writeback"] = as_lists(fsdp.state_dict())
    out["names_outside"] = [n for n, _ in fsdp.named_parameters()]
    dist.destroy_process_group()
    return out


def zero_grad_after_no_sync() -> dict:
    """A backward under no_sync, then zero_grad (each of three ways), then one synced
    backward: the gradient is that backward's alone, as a fresh one and as DDP's."""
    dist.init_process_group(timeout=60)
    rank = dist.get_rank()
    fsdp = FSDP(make_model("mlp"), auto_wrap_policy=POLICIES["size"])
    ddp = dist.DistributedDataParallel(make_model("mlp"))
    x, y = batch("mlp", rank, 0)
    out: dict = {}
    for how in ("optimizer", "module", "in_place"):
        grads = []
        for model in (fsdp, ddp):
            opt = dt.optim.SGD(model.parameters(), lr=0.1)
            with model.no_sync():
                loss_of("mlp", model(x * 3), y).backward()
            if how == "optimizer":
                opt.zero_grad()
            elif how == "module":
                model.zero_grad()
            else:
                opt.zero_grad(set_to_none=False)
            loss_of("mlp", model(x), y).backward()
            grads.append([p.grad.numpy().tolist() for p in model.parameters()])
            model.zero_grad()
        out[how] = grads[0]
        out[f"{how}_ddp"] = grads[1]
    loss_of("mlp", fsdp(x), y).backward()
    out["fresh"] = [p.grad.numpy().tolist() for p in fsdp.parameters()]
    dist.destroy_process_group()
    return out


class CheckpointedBlock(Block):
    """A block whose attention and MLP halves are activation-checkpointed segments."""

    def forward(self, x: dt.Tensor) -> dt.Tensor:
        from dtrain.utils.checkpoint import checkpoint

        def attend(x: dt.Tensor) -> dt.Tensor:
            q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)
            attention = (q @ k.transpose(-2, -1) / math.sqrt(D)).softmax(-1)
            return x + self.proj(attention @ v)

        x = checkpoint(attend, x, use_reentrant=False)
        return x + checkpoint(lambda h: self.fc2(F.gelu(self.fc1(self.ln2(h)))), x)


def checkpoint_inside_units(steps: int = 2) -> dict:
    """Checkpointed segments inside transformer_auto_wrap_policy units train as the plain
    model on the concatenated batch."""
    dist.init_process_group(timeout=60)
    rank, world = dist.get_rank(), dist.get_world_size()

    def build() -> nn.Module:
        model = make_model("tf")
        model.blocks = nn.ModuleList([CheckpointedBlock(), CheckpointedBlock()])
        return model

    plain = build()
    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={Block})
    fsdp = FSDP(build(), auto_wrap_policy=policy)
    units = len(FSDP.fsdp_modules(fsdp))
    opts = [dt.optim.SGD(m.parameters(), lr=0.2) for m in (plain, fsdp)]
    for step in range(steps):
        for model, opt, (x, y) in (
            (plain, opts[0], whole_batch("tf", world, step)),
            (fsdp, opts[1], batch("tf", rank, step)),
        ):
            opt.zero_grad()
            loss_of("tf", model(x), y).backward()
            opt.step()
    out = {"plain": as_lists(plain.state_dict()), "fsdp": as_lists(fsdp.state_dict())}
    out["units"] = units
    block = fsdp.module.blocks[0].module
    out["bound"] = [k for k in ("qkv", "fc1") if "weight" in vars(getattr(block, k))]
    dist.destroy_process_group()
    return out
