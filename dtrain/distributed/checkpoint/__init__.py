"""``dtrain.distributed.checkpoint``: torch.distributed.checkpoint's common API — every rank
writes its pieces of a state dict into one directory, and a job at any world size loads
them back in place (``docs/training.md``, "Distributed checkpoints")."""

from dtrain.distributed.checkpoint import state_dict
from dtrain.parallel.checkpoint_async import async_save
from dtrain.parallel.checkpoint_fs import FileSystemReader, FileSystemWriter
from dtrain.parallel.checkpoint_load import load
from dtrain.parallel.checkpoint_save import save
from dtrain.parallel.sharded_tensor import ShardedTensor

__all__ = [
    "FileSystemReader",
    "FileSystemWriter",
    "ShardedTensor",
    "async_save",
    "load",
    "save",
    "state_dict",
]
