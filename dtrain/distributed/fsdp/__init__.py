"""``dtrain.distributed.fsdp``: torch.distributed.fsdp's names (FSDP1's common subset), the
objects in ``dtrain.parallel.fsdp*``; ``docs/parallel.md`` describes them and where they
differ from torch."""

from dtrain.distributed.fsdp import wrap
from dtrain.parallel.fsdp import FullyShardedDataParallel
from dtrain.parallel.fsdp_flat import FlatParameter
from dtrain.parallel.fsdp_state import (
    BackwardPrefetch,
    CPUOffload,
    FullStateDictConfig,
    MixedPrecision,
    ShardingStrategy,
    StateDictConfig,
    StateDictType,
)

__all__ = [
    "BackwardPrefetch",
    "CPUOffload",
    "FlatParameter",
    "FullStateDictConfig",
    "FullyShardedDataParallel",
    "MixedPrecision",
    "ShardingStrategy",
    "StateDictConfig",
    "StateDictType",
    "wrap",
]
