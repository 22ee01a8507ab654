"""``dtrain.distributed.fsdp``: torch.distributed.fsdp's names (FSDP1's common subset), the
objects in ``dtrain.parallel.fsdp*``; ``docs/parallel.md`` describes them and where they
differ from torch."""

from dtrain.distributed.fsdp import wrap
from dtrain.parallel.fsdp import FullyShardedDataParallel
from dtrain.parallel.fsdp_flat import FlatParameter
from dtrain.parallel.fsdp_state import (
    BackwardPrefetch,
    CPUOffload,
    FullOptimStateDictConfig,
    FullStateDictConfig,
    LocalOptimStateDictConfig,
    LocalStateDictConfig,
    MixedPrecision,
    OptimStateDictConfig,
    ShardedOptimStateDictConfig,
    ShardedStateDictConfig,
    ShardingStrategy,
    StateDictConfig,
    StateDictSettings,
    StateDictType,
)

__all__ = [
    "BackwardPrefetch",
    "CPUOffload",
    "FlatParameter",
    "FullOptimStateDictConfig",
    "FullStateDictConfig",
    "FullyShardedDataParallel",
    "LocalOptimStateDictConfig",
    "LocalStateDictConfig",
    "MixedPrecision",
    "OptimStateDictConfig",
    "ShardedOptimStateDictConfig",
    "ShardedStateDictConfig",
    "ShardingStrategy",
    "StateDictConfig",
    "StateDictSettings",
    "StateDictType",
    "wrap",
]
