"""mlp_digits.py's classifier, written for Ray Train's API (``dtrain.train``): a training
function per worker, ``report`` with checkpoints, and a resume after a failure.

python examples/ray_train_digits.py                        # 2 workers (simulated nodes)
python examples/ray_train_digits.py --workers 4 --epochs 20 --storage-path /tmp/results
python examples/ray_train_digits.py --fail-at 3 --max-failures 1   # fails once, resumes

A port from Ray Train changes the imports (``ray.train`` -> ``dtrain.train``) and the model
code (``torch`` -> ``dtrain``); the function is imported by name in each worker, so it lives
at the top level and the code that calls ``fit()`` sits under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import common
from mlp_digits import build_model

import dtrain as dt
import dtrain.nn as nn
import dtrain.train as train
import dtrain.train.torch as train_torch
from dtrain.utils.data import DataLoader, TensorDataset


def train_func(config: dict) -> None:
    """One worker: train, evaluate, and report metrics with a checkpoint every epoch."""
    dt.manual_seed(config["seed"])
    x_train, y_train, x_test, y_test = common.digits(seed=config["seed"])
    net = build_model(config["hidden"], dropout=0.1)
    optimizer = dt.optim.AdamW(net.parameters(), lr=config["lr"], weight_decay=1e-4)
    start = 0
    checkpoint = train.get_checkpoint()  # set after a restart: resume from it
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = dt.load(os.path.join(folder, "state.safetensors"))
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"]
    model = train_torch.prepare_model(net)  # to this worker's device; DDP with several
    dataset = TensorDataset(dt.from_numpy(x_train), dt.from_numpy(y_train))
    loader = train_torch.prepare_data_loader(  # a DistributedSampler; shuffle kept
        DataLoader(dataset, batch_size=config["batch_size"], shuffle=True)
    )
    loss_fn = nn.CrossEntropyLoss()
    rank = train.get_context().get_world_rank()
    for epoch in range(start, config["epochs"]):
        if epoch == config.get("fail_at") and rank == 0 and checkpoint is None:
            raise RuntimeError(f"a simulated failure at epoch {epoch}")
        if train.get_context().get_world_size() > 1:
            loader.sampler.set_epoch(epoch)
        total, batches = 0.0, 0
        for images, labels in loader:
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        accuracy = common.accuracy(net, dt.from_numpy(x_test), dt.from_numpy(y_test))
        metrics = {"epoch": epoch + 1, "loss": total / batches, "accuracy": accuracy}
        with tempfile.TemporaryDirectory() as folder:
            saved = None
            if rank == 0:  # one copy of the weights; the other ranks report metrics only
                state = {"model": net.state_dict(), "optimizer": optimizer.state_dict()}
                dt.save({**state, "epoch": epoch + 1}, os.path.join(folder, "state.safetensors"))
                saved = train.Checkpoint.from_directory(folder)
            train.report(metrics, checkpoint=saved)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help="per worker")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--storage-path", default=os.path.join(tempfile.gettempdir(), "results"))
    parser.add_argument(
        "--name", help="the run's name (default: from the time); an existing one resumes"
    )
    parser.add_argument("--max-failures", type=int, default=0)
    parser.add_argument("--fail-at", type=int, help="rank 0 fails once at this epoch (1 or more)")
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--address", help="a Ray cluster (default: RAY_ADDRESS or embedded)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> train.Result:
    args = parse(argv)
    config = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "hidden": args.hidden,
        "seed": args.seed,
        "fail_at": args.fail_at,
    }
    trainer = train_torch.TorchTrainer(
        train_func,
        train_loop_config=config,
        scaling_config=train.ScalingConfig(num_workers=args.workers, use_gpu=args.use_gpu),
        run_config=train.RunConfig(
            name=args.name,
            storage_path=args.storage_path,
            checkpoint_config=train.CheckpointConfig(num_to_keep=2),
            failure_config=train.FailureConfig(max_failures=args.max_failures),
        ),
        address=args.address,
    )
    result = trainer.fit()
    print(
        f"epoch {result.metrics['epoch']}: loss {result.metrics['loss']:.4f}, "
        f"test accuracy {result.metrics['accuracy']:.4f}; checkpoint {result.checkpoint.path}"
    )
    return result


if __name__ == "__main__":
    main()
