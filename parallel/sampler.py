"""``DistributedSampler``: each rank draws its own shard of the dataset every epoch."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np


class DistributedSampler:
    """Indices of rank ``rank``'s shard of ``dataset``, reshuffled by ``set_epoch``.

    As in PyTorch, with ``drop_last=False`` the index list is padded by repeating its start
    until it divides evenly, so every rank gets ``ceil(len / num_replicas)`` samples and some
    samples are seen twice per epoch; ``drop_last=True`` drops the tail instead. For
    evaluation, ``pad=False`` (a dtrain addition) gives uneven shards that together visit
    every sample exactly once, so an all-reduced metric counts each sample once. The ranks
    then make different numbers of forward passes: run them through ``model.module`` (or
    build the DDP with ``broadcast_buffers=False``), since a DDP forward may broadcast
    buffers, a collective every rank must join (as in PyTorch, only the first forward
    after a training step does; a rank with no samples at all would miss it).
    """

    def __init__(
        self,
        dataset: Any,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        pad: bool = True,
    ) -> None:
        if num_replicas is None or rank is None:
            from dtrain.parallel import api

            if not api.is_initialized():
                raise RuntimeError(
                    "DistributedSampler needs num_replicas and rank, or an initialised "
                    "process group (dtrain.parallel.init_process_group())"
                )
            num_replicas = api.get_world_size() if num_replicas is None else num_replicas
            rank = api.get_rank() if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: rank {rank} is not in [0, {num_replicas})")
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.shuffle, self.seed, self.drop_last, self.pad = shuffle, seed, drop_last, pad
        self.epoch = 0
        length = len(dataset)
        if not pad:
            self.num_samples = len(range(rank, length, num_replicas))
        elif drop_last:
            self.num_samples = length // num_replicas
        else:
            self.num_samples = math.ceil(length / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle: call it at the start of every epoch, with the same value on every rank."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        length = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(length)
        else:
            order = np.arange(length)
        if not self.pad:
            return iter(order[self.rank :: self.num_replicas].tolist())
        if self.drop_last:
            order = order[: self.total_size]
        elif self.total_size > length:
            repeats = math.ceil((self.total_size - length) / max(length, 1))
            order = np.concatenate([order, *([order] * repeats)])[: self.total_size]
        return iter(order[self.rank : self.total_size : self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
