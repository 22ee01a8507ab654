"""Workers for the one-rank nccl tests that train (run by launcher.py on the GPU machine)."""

from __future__ import annotations

import numpy as np

import dtrain as dt
import dtrain.nn.functional as F
import dtrain.parallel as dist
from dtrain import nn


def _mlp(seed: int) -> nn.Module:
    dt.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5)).to("cuda")


def ddp_nccl_matches_plain(steps: int = 4, hook: str | None = None) -> dict:
    """DDP over nccl (reducer forced on at one rank: GPU buckets, views and hooks; a one-rank
    group skips the NCCL transfer itself) against plain training of the same model on the
    same batches: the parameters after ``steps`` steps."""
    dist.init_process_group("nccl", timeout=60)
    plain, wrapped = _mlp(0), _mlp(0)
    ddp = dist.DistributedDataParallel(wrapped, _reduce_at_world_size_1=True, bucket_cap_mb=0.001)
    if hook == "fp16":  # float16 on the wire, through the fused scale-and-cast kernels
        ddp.register_comm_hook(None, dist.fp16_compress_hook)
    optimizers = [dt.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (plain, ddp)]
    rng = np.random.default_rng(1)
    for _ in range(steps):
        x = dt.tensor(rng.standard_normal((16, 20)).astype(np.float32), device="cuda")
        y = dt.tensor(rng.integers(0, 5, 16), device="cuda")
        for model, optimizer in zip((plain, ddp), optimizers):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    worst = max(
        float(np.abs(p.detach().cpu().numpy() - q.detach().cpu().numpy()).max())
        for p, q in zip(plain.parameters(), wrapped.parameters())
    )
    grads_on_gpu = all(p.grad.is_cuda for p in wrapped.parameters())
    buckets = len(ddp._buckets)
    dist.destroy_process_group()
    return {"worst": worst, "grads_on_gpu": grads_on_gpu, "buckets": buckets}


def nccl_batch_to_self() -> dict:
    """One rank's ``batch_isend_irecv`` over nccl: it sends to itself and receives, receives
    listed first (one NCCL group call, so nothing waits on what comes after it): a GPU tensor
    into a GPU tensor, and a host array into a host array (staged through the GPU)."""
    import cupy

    dist.init_process_group("nccl", timeout=60)
    sent = dt.tensor(np.arange(1000, dtype=np.float32) * 3, device="cuda")
    into = dt.zeros(1000, device="cuda")
    host_sent, host_into = np.arange(7, dtype=np.int64) - 3, np.zeros(7, dtype=np.int64)
    works = dist.batch_isend_irecv(
        [
            dist.P2POp(dist.irecv, into, 0),
            dist.P2POp(dist.irecv, host_into, 0),
            dist.P2POp(dist.isend, sent, 0),
            dist.P2POp(dist.isend, host_sent, 0),
        ]
    )
    for work in works:
        work.wait()
    out = {
        "works": len(works),
        "into_on_gpu": into.is_cuda,
        "into": cupy.asnumpy(into._array).tolist(),
        "host_into": host_into.tolist(),
    }
    dist.destroy_process_group()
    return out


def fsdp_matches_plain(backend: str = "nccl", device: str = "cuda", steps: int = 3) -> dict:
    """FullyShardedDataParallel, one unit per Linear, against plain training of the same
    model on the same batches: the full state after ``steps`` AdamW steps with clipping,
    and where the shards live."""
    from dtrain.distributed.fsdp import FullyShardedDataParallel
    from dtrain.distributed.fsdp.wrap import ModuleWrapPolicy

    dist.init_process_group(backend, timeout=60)

    def model() -> nn.Module:
        dt.manual_seed(0)
        return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5)).to(device)

    plain = model()
    sharded = FullyShardedDataParallel(model(), auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))
    optimizers = [dt.optim.AdamW(m.parameters(), lr=0.01) for m in (plain, sharded)]
    rng = np.random.default_rng(1)
    for _ in range(steps):
        x = dt.tensor(rng.standard_normal((16, 20)).astype(np.float32), device=device)
        y = dt.tensor(rng.integers(0, 5, 16), device=device)
        for m, optimizer in zip((plain, sharded), optimizers):
            optimizer.zero_grad()
            F.cross_entropy(m(x), y).backward()
            if m is sharded:
                sharded.clip_grad_norm_(0.5)
            else:
                nn.utils.clip_grad_norm_(plain.parameters(), 0.5)
            optimizer.step()
    full = sharded.state_dict()
    worst = max(
        float(np.abs(value.detach().cpu().numpy() - full[key].detach().cpu().numpy()).max())
        for key, value in plain.state_dict().items()
    )
    shards = list(sharded.parameters())
    on_device = all(p.device.type == device and p.grad.device.type == device for p in shards)
    dist.destroy_process_group()
    return {"worst": worst, "on_device": on_device, "shards": len(shards)}


def fsdp_checkpoint_resumes(
    folder: str, backend: str = "nccl", device: str = "cuda", steps: int = 2
) -> dict:
    """FSDP trained ``steps`` AdamW steps, saved with ``dtrain.distributed.checkpoint``
    (sharded model and optimizer state), loaded into a fresh FSDP model, then one more step
    on each: the resumed model must equal the one that went on."""
    import dtrain.distributed.checkpoint as dcp
    from dtrain.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from dtrain.distributed.fsdp import FullyShardedDataParallel
    from dtrain.distributed.fsdp.wrap import ModuleWrapPolicy

    dist.init_process_group(backend, timeout=60)

    def fresh(seed: int) -> tuple:
        dt.manual_seed(seed)
        net = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3)).to(device)
        model = FullyShardedDataParallel(net, auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))
        return model, dt.optim.AdamW(model.parameters(), lr=0.01)

    rng = np.random.default_rng(2)
    batches = [
        (
            dt.tensor(rng.standard_normal((8, 12)).astype(np.float32), device=device),
            dt.tensor(rng.integers(0, 3, 8), device=device),
        )
        for _ in range(steps + 1)
    ]

    def step(model: nn.Module, optimizer: dt.optim.Optimizer, batch: tuple) -> None:
        optimizer.zero_grad()
        F.cross_entropy(model(batch[0]), batch[1]).backward()
        optimizer.step()

    model, optimizer = fresh(0)
    for batch in batches[:steps]:
        step(model, optimizer, batch)
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=folder)
    resumed, resumed_optimizer = fresh(1)  # other initial weights: the load must replace them
    model_state, optim_state = get_state_dict(resumed, resumed_optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=folder)
    set_state_dict(
        resumed,
        resumed_optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optim"],
    )
    step(model, optimizer, batches[steps])
    step(resumed, resumed_optimizer, batches[steps])
    ours, theirs = model.state_dict(), resumed.state_dict()
    worst = max(
        float(np.abs(ours[k].detach().cpu().numpy() - theirs[k].detach().cpu().numpy()).max())
        for k in ours
    )
    on_device = all(p.device.type == device for p in resumed.parameters())
    dist.destroy_process_group()
    return {"worst": worst, "on_device": on_device, "keys": sorted(ours)}
