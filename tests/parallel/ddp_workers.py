"""Worker functions for the DDP tests (run by launcher.py in every rank)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
import dtrain.parallel as dist
from dtrain.parallel.ddp_stats import DDPStats

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))


def _model(kind: str) -> nn.Module:
    dt.manual_seed(0)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5)
        )
    if kind == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * 4 * 4, 5),
        )
    import char_gpt

    return char_gpt.GPT(vocab=11, block=8, embed=16, layers=1, heads=2, dropout=0.0)


def _batch(kind: str, count: int, step: int) -> tuple:
    rng = np.random.default_rng(100 + step)
    if kind == "mlp":
        return rng.standard_normal((count, 12)).astype(np.float32), rng.integers(0, 5, count)
    if kind == "cnn":
        return rng.standard_normal((count, 1, 8, 8)).astype(np.float32), rng.integers(0, 5, count)
    tokens = rng.integers(0, 11, (count, 9))
    return tokens[:, :-1], tokens[:, 1:]


def _loss(kind: str, model: nn.Module, x: np.ndarray, y: np.ndarray) -> dt.Tensor:
    out = model(dt.tensor(x))
    if kind == "gpt":
        return F.cross_entropy(out.reshape(-1, 11), dt.tensor(y).reshape(-1))
    return F.cross_entropy(out, dt.tensor(y))


def equivalence(
    kind: str, steps: int = 3, batch: int = 4, accumulate: int = 1, hook: str | None = None
) -> dict:
    """Train DDP (per-rank batch ``batch``) and, in the same process, one model on the
    global batch; return the largest parameter difference after ``steps`` steps."""
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    reference = _model(kind)
    ref_opt = dt.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    local = _model(kind)
    if kind == "cnn":
        local = dist.SyncBatchNorm.convert_sync_batchnorm(local)
    model = dist.DistributedDataParallel(local, bucket_cap_mb=0.002)
    if hook == "fp16":
        model.register_comm_hook(None, dist.fp16_compress_hook)
    opt = dt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    views = all(p.grad is None for p in local.parameters())
    for step in range(steps):
        ref_opt.zero_grad()
        opt.zero_grad()
        for micro in range(accumulate):
            x, y = _batch(kind, world * batch, step * accumulate + micro)
            (_loss(kind, reference, x, y) / accumulate).backward()
            mine = slice(rank * batch, (rank + 1) * batch)
            if micro < accumulate - 1:
                with model.no_sync():
                    (_loss(kind, model, x[mine], y[mine]) / accumulate).backward()
            else:
                (_loss(kind, model, x[mine], y[mine]) / accumulate).backward()
        ref_opt.step()
        opt.step()
    worst = _worst_difference(reference, local)
    buckets = model._buckets
    views = views and all(
        p.grad._array.base is not None and np.shares_memory(p.grad._array, b.flat)
        for b in buckets
        for p in b.params
    )
    dist.destroy_process_group()
    return {"worst": worst, "buckets": len(buckets), "grads_are_views": bool(views)}


class _WithUnused(nn.Module):
    """``unused`` gets no gradient on any rank; ``partly`` only on the ranks in ``partly_on``."""

    def __init__(self, partly_on: tuple = ()) -> None:
        super().__init__()
        self.body = nn.Linear(12, 16)
        self.head = nn.Linear(16, 5)
        self.partly = nn.Linear(16, 5)
        self.unused = nn.Linear(5, 5)
        self.partly_on = partly_on

    def forward(self, x: dt.Tensor) -> dt.Tensor:
        h = self.body(x).relu()
        out = self.head(h)
        if dist.is_initialized() and dist.get_rank() in self.partly_on:
            out = out + self.partly(h)
        return out


def _worst_difference(reference: Any, local: Any) -> float:
    """The largest difference between two models' state entries."""
    worst = 0.0
    for a, b in zip(reference.state_dict().values(), local.state_dict().values()):
        diff = np.abs(a.numpy().astype(np.float64) - b.numpy().astype(np.float64)).max()
        worst = max(worst, float(diff))
    return worst


def unused_parameter(find_unused_parameters: bool = True) -> dict:
    """With ``find_unused_parameters``, parameters no rank used keep grad None (without,
    zeros); one used on rank 0 only gets the average."""
    dist.init_process_group()
    dt.manual_seed(0)
    model = dist.DistributedDataParallel(
        _WithUnused(partly_on=(0,)), find_unused_parameters=find_unused_parameters
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            model(dt.ones(4, 12)).sum().backward()
    messages = [str(w.message) for w in caught if "no gradient" in str(w.message)]
    module = model.module
    partly = module.partly.weight.grad
    dist.destroy_process_group()
    return {
        "warnings": messages,
        "unused_grads": [p.grad is None for p in module.unused.parameters()],
        "partly_grad_sum": None if partly is None else float(partly.numpy().sum()),
    }


def unused_with_adamw(steps: int = 3, batch: int = 4) -> dict:
    """DDP with AdamW and a layer no rank uses against one process on the global batch: the
    unused layer must not move (no decoupled weight decay on a zero gradient)."""
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    dt.manual_seed(0)
    reference = _WithUnused()
    dt.manual_seed(0)
    local = _WithUnused()
    model = dist.DistributedDataParallel(local, bucket_cap_mb=0.002, find_unused_parameters=True)
    ref_opt = dt.optim.AdamW(reference.parameters(), lr=1e-2)
    opt = dt.optim.AdamW(model.parameters(), lr=1e-2)
    start = local.unused.weight.detach().numpy().copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unused-parameter warning is expected here
        for step in range(steps):
            ref_opt.zero_grad()
            opt.zero_grad()
            x, y = _batch("mlp", world * batch, step)
            _loss("mlp", reference, x, y).backward()
            mine = slice(rank * batch, (rank + 1) * batch)
            _loss("mlp", model, x[mine], y[mine]).backward()
            ref_opt.step()
            opt.step()
    worst = _worst_difference(reference, local)
    moved = float(np.abs(local.unused.weight.detach().numpy() - start).max())
    dist.destroy_process_group()
    return {"worst": worst, "unused_moved": moved}


def mismatched_models() -> dict:
    dist.init_process_group()
    width = 8 if dist.get_rank() == 0 else 9
    try:
        dist.DistributedDataParallel(nn.Linear(4, width))
    except ValueError as exc:
        return {"error": str(exc)}
    finally:
        dist.destroy_process_group()
    return {"error": None}


def stats_timeline(steps: int = 3, force: bool = False, stats: bool = True) -> dict:
    """Train the small char-GPT with ``DDPStats`` on and return every recorded step's raw
    timeline, plus a no_sync backward that must not be recorded. ``force`` runs the reducer
    at world size 1 (the measurement switch); the gradients are compared with the
    pass-through module's."""
    dist.init_process_group()
    rank = dist.get_rank()
    model = dist.DistributedDataParallel(
        _model("gpt"), bucket_cap_mb=0.002, _reduce_at_world_size_1=force
    )
    if stats:
        model.stats = DDPStats()
    plain = _model("gpt")
    for step in range(steps):
        x, y = _batch("gpt", 4, step * 10 + rank)
        model.zero_grad()
        plain.zero_grad()
        if step == 1:  # an accumulation backward: no communication, nothing recorded
            with model.no_sync():
                _loss("gpt", model, x, y).backward()
        _loss("gpt", model, x, y).backward()
        _loss("gpt", plain, x, y).backward()
        if step == 1:
            _loss("gpt", plain, x, y).backward()
    worst = max(
        float(np.abs(a.grad.numpy() - b.grad.numpy()).max())
        for a, b in zip(model.module.parameters(), plain.parameters())
    )
    recorded = []
    for s in model.stats.steps if stats else []:
        recorded.append(
            {
                "backward_start": s.backward_start,
                "compute_end": s.compute_end,
                "end": s.end,
                "buckets": [[b.index, b.nbytes, b.launch, b.done] for b in s.buckets],
                "backward_compute_s": s.backward_compute_s,
                "allreduce_s": s.allreduce_s,
                "exposed_s": s.exposed_s,
                "hidden_s": s.hidden_s,
                "wait_s": s.wait_s,
            }
        )
    summary = model.stats.summary() if stats else None
    out = {
        "steps": recorded,
        "summary": summary,
        "bucket_bytes": [int(b.flat.nbytes) for b in model._buckets],
        "pending_stamps": len(model._stamps),
        "grad_diff_vs_plain": worst,
        "world": dist.get_world_size(),
    }
    dist.destroy_process_group()
    return out
