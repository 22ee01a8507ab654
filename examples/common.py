"""What the training examples share: a progress bar, checkpoints with RNG state, digits data.

Kept small on purpose: each example should read top to bottom on its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

import dtrain as dt
from dtrain.runtime import default_generator


def setup_distributed(device: dt.device) -> tuple[int, int]:
    """Join the job's process group when the environment says this is one rank of several
    (``dtrain launch``, torchrun's variables, or ``mpiexec``); returns (rank, world size).
    A plain ``python script.py`` stays a single process. The backend suits ``device``: nccl
    for a GPU, else mpi under mpiexec or tcp (unless DTRAIN_BACKEND / --backend says)."""
    from dtrain.runtime.config import read_config, under_mpiexec

    config = read_config()
    if (config.world_size or 1) > 1 or under_mpiexec():
        import dtrain.parallel as dist

        if not dist.is_initialized():
            backend = config.backend
            if backend is None:
                cpu_backend = "mpi" if under_mpiexec() else "tcp"
                backend = "nccl" if device.type == "cuda" else cpu_backend
            dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def pick_device(requested: str) -> dt.device:
    """``--device``: ``auto`` is this rank's own device (``dtrain.parallel.local_device()``:
    its GPU under ``dtrain launch --gpus-per-node``, torchrun or mpiexec on a GPU node, else
    the CPU); any other value is a device name (``cpu``, ``cuda``, ``cuda:1``)."""
    if requested == "auto":
        import dtrain.parallel as dist

        return dist.local_device()
    return dt.device(requested)


def add_device_argument(parser: Any) -> None:
    """The ``--device`` option every training example takes."""
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N, or auto (this rank's GPU if any)"
    )


def is_main() -> bool:
    """True on the rank that logs and writes checkpoints (rank 0, or the only process)."""
    import dtrain.parallel as dist

    return not dist.is_initialized() or dist.get_rank() == 0


def wrap_model(model: dt.nn.Module, sync_batchnorm: bool = False) -> dt.nn.Module:
    """``DistributedDataParallel(model)`` when running as several ranks, else the model."""
    import dtrain.parallel as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return model
    if sync_batchnorm:
        model = dist.SyncBatchNorm.convert_sync_batchnorm(model)
    return dist.DistributedDataParallel(model)


def finish_distributed() -> None:
    """Leave the process group, if this process joined one."""
    import dtrain.parallel as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def log(message: str) -> None:
    """Print on the main rank only."""
    if is_main():
        print(message, flush=True)


def progress(iterable: Iterable, **options: Any) -> Iterable:
    """A tqdm progress bar on the main rank when tqdm is installed (``examples`` extra)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    options["disable"] = options.get("disable", False) or not is_main()
    return tqdm(iterable, **options)


def save_checkpoint(path: str, model: dt.nn.Module, optimizer: Any, **extra: Any) -> None:
    """Model, optimizer, the default RNG stream and ``extra`` (epoch, scheduler, data
    generator state …) in one safetensors file, written atomically by the main rank."""
    if not is_main():
        return
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": default_generator.get_state(),
        **extra,
    }
    dt.save(state, path)


def load_checkpoint(path: str, model: dt.nn.Module, optimizer: Any) -> dict:
    """Restore what ``save_checkpoint`` wrote; returns the whole state for ``extra`` fields.
    Tensors load straight onto the model's device: the main rank saved from its own GPU,
    which is another rank's neighbour, not its own."""
    state = dt.load(path, map_location=str(next(model.parameters()).device))
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    default_generator.set_state(state["rng"])
    return state


def maybe_resume(
    path: str | None, resume: bool, model: dt.nn.Module, optimizer: Any
) -> dict | None:
    """The checkpoint's state when ``--resume`` was asked for and the file exists."""
    if resume and path and os.path.exists(path):
        state = load_checkpoint(path, model, optimizer)
        log(f"resumed from {path} (epoch {state.get('epoch', state.get('step'))})")
        return state
    if resume:
        log(f"no checkpoint at {path}; starting fresh")
    return None


def digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, ...]:
    """scikit-learn's bundled 8×8 digits (no download), scaled to [0, 1] and split the same
    way every time: (x_train, y_train, x_test, y_test) as float32 / int64 arrays."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise SystemExit(
            "this example needs scikit-learn's digits: pip install 'dtrain[examples]'"
        ) from exc
    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    labels = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(len(labels) * (1 - test_fraction))
    train, test = order[:cut], order[cut:]
    return images[train], labels[train], images[test], labels[test]


def accuracy(model: dt.nn.Module, inputs: dt.Tensor, labels: dt.Tensor, batch: int = 512) -> float:
    """Fraction of correct predictions, in eval mode and without the graph, on the device
    of the model's parameters."""
    device = next(model.parameters()).device
    model.eval()
    correct = 0
    with dt.no_grad():
        for start in range(0, len(labels), batch):
            logits = model(inputs[start : start + batch].to(device))
            hits = logits.argmax(1) == labels[start : start + batch].to(device)
            correct += int(hits.sum().item())
    model.train()
    return correct / len(labels)
