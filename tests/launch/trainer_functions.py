"""Training functions for tests/launch/test_trainer.py: module-level, so TorchTrainer's
workers import them by name (this folder is on their sys.path, as it is on pytest's)."""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np

import dtrain as dt
import dtrain.nn as nn
import dtrain.train as train
import dtrain.train.torch as train_torch
from dtrain.parallel import DistributedSampler
from dtrain.utils.data import DataLoader, TensorDataset


def _data() -> TensorDataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x @ np.array([[1.5], [-2.0], [0.5]], dtype=np.float32) + 0.25).astype(np.float32)
    return TensorDataset(dt.from_numpy(x), dt.from_numpy(y))


def linear_fit(config: dict) -> None:
    """A linear regression with SGD, one checkpoint per epoch; resumes from get_checkpoint().

    config: epochs, lr, and fail_at (an epoch at which rank 1 of the first attempt raises).
    Rank 0's metrics name rank 0; every rank adds its own file to each checkpoint.
    """
    context = train.get_context()
    rank = context.get_world_rank()
    dt.manual_seed(0)
    net = nn.Linear(3, 1)
    start = 0
    resumed_from = None
    checkpoint = train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            net.load_state_dict(dt.load(os.path.join(folder, "model.safetensors")))
            start = checkpoint.get_metadata()["epoch"] + 1
            resumed_from = os.path.basename(checkpoint.path)
    model = train_torch.prepare_model(net)
    loader = train_torch.prepare_data_loader(DataLoader(_data(), batch_size=8, shuffle=True))
    optimizer = dt.optim.SGD(model.parameters(), lr=config["lr"])
    loss_fn = nn.MSELoss()
    restart = int(os.environ["DTRAIN_RESTART_COUNT"])
    for epoch in range(start, config["epochs"]):
        if epoch == config.get("fail_at") and rank == 1 and restart == 0:
            raise RuntimeError(f"injected failure at epoch {epoch}")
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        total, batches = 0.0, 0
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        metrics = {
            "epoch": epoch,
            "loss": total / batches,
            "rank": rank,
            "world_size": context.get_world_size(),
            "local_world_size": context.get_local_world_size(),
            "node_rank": context.get_node_rank(),
            "local_rank": context.get_local_rank(),
            "name": context.get_experiment_name(),
            "batches": batches,
            "distributed_sampler": isinstance(loader.sampler, DistributedSampler),
            "restart": restart,
            "resumed_from": resumed_from,
        }
        with tempfile.TemporaryDirectory() as folder:
            if rank == 0:
                dt.save(net.state_dict(), os.path.join(folder, "model.safetensors"))
            with open(os.path.join(folder, f"rank_{rank}.json"), "w") as handle:
                json.dump({"rank": rank, "epoch": epoch}, handle)
            saved = train.Checkpoint.from_directory(folder)
            if rank == 0:
                saved.set_metadata({"epoch": epoch})
            train.report(metrics, checkpoint=saved)


def fail_on_rank(config: dict) -> None:
    """Rank ``config["rank"]`` raises; the others wait to be stopped by the launcher."""
    if train.get_context().get_world_rank() == config["rank"]:
        raise ValueError(f"boom from rank {config['rank']}")
    time.sleep(120)


def no_arguments() -> None:
    """A training function that takes no config (Ray Train allows it)."""
    train.report({"ok": True})
