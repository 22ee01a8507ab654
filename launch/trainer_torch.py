"""``dtrain.train.torch``'s helpers, as Ray Train's ``ray.train.torch``: ``get_device``,
``get_devices``, ``prepare_model`` (device move, then DistributedDataParallel with more than
one worker), ``prepare_data_loader`` (a DistributedSampler that keeps the loader's shuffle,
and batches moved to the worker's device) and ``enable_reproducibility``."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

import dtrain as dt
from dtrain.launch.trainer_session import current
from dtrain.utils.data import DataLoader, IterableDataset, RandomSampler, SequentialSampler

logger = logging.getLogger(__name__)


def get_device() -> dt.device:
    """This worker's device: its GPU with ``use_gpu=True``, else the CPU
    (``dtrain.parallel.local_device()``)."""
    import dtrain.parallel as dist

    return dist.local_device()


def get_devices() -> list[dt.device]:
    """This worker's devices: one (dtrain gives each worker one GPU at most)."""
    return [get_device()]


def prepare_model(
    model: dt.nn.Module,
    move_to_device: bool | Any = True,
    parallel_strategy: str | None = "ddp",
    parallel_strategy_kwargs: dict[str, Any] | None = None,
) -> dt.nn.Module:
    """Move ``model`` to the worker's device (or to ``move_to_device`` when it is a device)
    and, with more than one worker, wrap it: ``"ddp"`` (DistributedDataParallel), ``"fsdp"``
    (FullyShardedDataParallel), or None (no wrapper).

    Raises:
        ValueError: an unknown ``parallel_strategy``.
    """
    if parallel_strategy not in ("ddp", "fsdp", None):
        raise ValueError(
            f"prepare_model(parallel_strategy={parallel_strategy!r}): use 'ddp', 'fsdp' or None"
        )
    context = current("prepare_model").context
    device = move_to_device if not isinstance(move_to_device, bool) else get_device()
    device = dt.device(device)
    if device.type == "cuda":
        dt.cuda.set_device(device)
    if move_to_device is not False:
        model = model.to(device)
    if parallel_strategy is None or context.get_world_size() == 1:
        return model
    kwargs = dict(parallel_strategy_kwargs or {})
    if parallel_strategy == "ddp":
        from dtrain.parallel import DistributedDataParallel

        return DistributedDataParallel(model, **kwargs)
    from dtrain.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel(model, **kwargs)


def prepare_data_loader(
    data_loader: DataLoader,
    add_dist_sampler: bool = True,
    move_to_device: bool = True,
    auto_transfer: bool = True,
) -> DataLoader:
    """The loader for this worker, as Ray Train prepares it.

    With more than one worker (and ``add_dist_sampler``), a new DataLoader over the same
    dataset, batch size and options with a ``DistributedSampler(dataset, shuffle=...)``,
    shuffling exactly when the original did (its sampler was not a SequentialSampler); call
    ``loader.sampler.set_epoch(epoch)`` each epoch for a new order. A loader that already
    has a DistributedSampler, or reads an IterableDataset, keeps its order. With
    ``move_to_device``, every batch (tensors in tuples, lists and dicts) is moved to
    ``get_device()``. ``auto_transfer`` is accepted: copies are not overlapped here.
    """
    from dtrain.parallel import DistributedSampler

    context = current("prepare_data_loader").context
    if (
        add_dist_sampler
        and context.get_world_size() > 1
        and not isinstance(data_loader.sampler, DistributedSampler)
        and not isinstance(data_loader.dataset, IterableDataset)
    ):
        shuffle = not isinstance(data_loader.sampler, SequentialSampler)
        default = isinstance(data_loader.sampler, (SequentialSampler, RandomSampler))
        if not default and context.get_world_rank() == 0:
            logger.warning(
                "prepare_data_loader: the %s is replaced by a DistributedSampler; pass "
                "add_dist_sampler=False to keep it",
                type(data_loader.sampler).__name__,
            )
        data_loader = DataLoader(
            data_loader.dataset,
            batch_size=data_loader.batch_size,
            shuffle=False,
            sampler=DistributedSampler(data_loader.dataset, shuffle=shuffle),
            num_workers=data_loader.num_workers,
            collate_fn=data_loader.collate_fn,
            pin_memory=data_loader.pin_memory,
            drop_last=data_loader.drop_last,
            timeout=data_loader.timeout,
            worker_init_fn=data_loader.worker_init_fn,
            generator=data_loader.generator,
        )
    if move_to_device:
        data_loader = _DeviceLoader(data_loader, get_device())
    return data_loader


class _DeviceLoader(DataLoader):
    """A DataLoader whose batches arrive on ``device``; it has the wrapped loader's
    attributes (``sampler``, ``batch_size``, ``dataset`` …), as Ray Train's wrapper."""

    def __init__(self, loader: DataLoader, device: dt.device) -> None:
        self.__dict__.update(loader.__dict__)
        self._loader = loader
        self.device = device

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self._loader:
            yield _to_device(batch, self.device)


def _to_device(item: Any, device: dt.device) -> Any:
    if isinstance(item, dt.Tensor):
        return item.to(device)
    if isinstance(item, Mapping):
        return {key: _to_device(value, device) for key, value in item.items()}
    if isinstance(item, tuple):
        return tuple(_to_device(value, device) for value in item)
    if isinstance(item, list):
        return [_to_device(value, device) for value in item]
    return item


def enable_reproducibility(seed: int = 0) -> None:
    """Make training repeatable, as Ray Train's: seed dtrain's, numpy's and Python's random
    generators with ``seed`` (give every worker the same seed for identical initial weights),
    turn on ``dtrain.use_deterministic_algorithms(True)``, set
    ``dtrain.backends.cudnn.benchmark = False`` (no effect: dtrain uses no cuDNN) and
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (deterministic cuBLAS). Unlike Ray's, the loaders
    that ``prepare_data_loader`` builds are not seeded: give your DataLoader a seeded
    ``generator`` (and ``worker_init_fn`` with worker processes) yourself."""
    import dtrain.backends.cudnn

    dt.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    dt.use_deterministic_algorithms(True)
    dtrain.backends.cudnn.benchmark = False
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
