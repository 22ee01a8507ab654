"""A small CNN on scikit-learn's bundled 8×8 digits: two conv blocks with batch norm.

python examples/cnn_digits.py                          # ≥ 95 % test accuracy in a minute
python examples/cnn_digits.py --epochs 5 --checkpoint cnn.safetensors
python examples/cnn_digits.py --epochs 10 --checkpoint cnn.safetensors --resume
"""

from __future__ import annotations

import argparse
import time

import common

import dtrain as dt
import dtrain.nn as nn
from dtrain.parallel import DistributedSampler
from dtrain.utils.data import DataLoader, TensorDataset


def build_model(channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 8×8 → 4×4
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.BatchNorm2d(2 * channels),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 4×4 → 2×2
        nn.Flatten(),
        nn.Linear(2 * channels * 4, 10),
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="save here after every epoch")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument(
        "--stop-after", type=int, help="stop after this epoch, as if interrupted (then --resume)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    common.add_device_argument(parser)
    return parser.parse_args(argv)


def train(args: argparse.Namespace) -> dict:
    """Train; returns the final epoch's mean loss and the test accuracy."""
    device = common.pick_device(args.device)
    _rank, world = common.setup_distributed(device)
    dt.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = common.digits(seed=args.seed)
    data_rng = dt.Generator().manual_seed(args.seed)
    dataset = TensorDataset(dt.from_numpy(x_train[:, None]), dt.from_numpy(y_train))
    # One shard per rank when distributed (batch_size is per rank, as in PyTorch).
    sampler = DistributedSampler(dataset, seed=args.seed) if world > 1 else None
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=data_rng,
    )
    net = build_model(args.channels).to(device)
    model = common.wrap_model(net, sync_batchnorm=True)
    if model is not net:
        net = model.module  # BatchNorm layers were swapped for SyncBatchNorm
    optimizer = dt.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = dt.optim.lr_scheduler.StepLR(
        optimizer, step_size=max(1, args.epochs // 3), gamma=0.5
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    start = 0
    state = common.maybe_resume(args.checkpoint, args.resume, model, optimizer)
    if state is not None:
        start = state["epoch"]
        scheduler.load_state_dict(state["scheduler"])
        data_rng.set_state(state["data_rng"])
    epoch_loss = float("nan")
    end = args.epochs if args.stop_after is None else min(args.stop_after, args.epochs)
    for epoch in common.progress(range(start, end), disable=args.quiet, desc="epochs"):
        if sampler is not None:
            sampler.set_epoch(epoch)
        total, batches, seen, started = 0.0, 0, 0, time.perf_counter()
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches, seen = total + loss.item(), batches + 1, seen + len(labels)
        scheduler.step()
        epoch_loss = total / batches
        if not args.quiet:  # the loss curve and throughput, from rank 0
            rate = seen * world / (time.perf_counter() - started)
            common.log(f"epoch {epoch + 1}: loss {epoch_loss:.4f}, {rate:,.0f} samples/s")
        if args.checkpoint:
            common.save_checkpoint(
                args.checkpoint,
                model,
                optimizer,
                epoch=epoch + 1,
                scheduler=scheduler.state_dict(),
                data_rng=data_rng.get_state(),
            )
    accuracy = common.accuracy(net, dt.from_numpy(x_test[:, None]), dt.from_numpy(y_test))
    common.log(
        f"final epoch loss {epoch_loss:.4f}, test accuracy {accuracy:.4f} ({len(y_test)} images)"
    )
    return {"loss": epoch_loss, "accuracy": accuracy, "model": net}


def main(argv: list[str] | None = None) -> int:
    train(parse(argv))
    common.finish_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
