"""``dtrain.parallel``: process groups and collectives over tcp, mpi or nccl, with
torch.distributed's names and semantics."""

from dtrain.parallel.api import (
    GroupMember,
    destroy_process_group,
    get_backend,
    get_rank,
    get_world_size,
    init_process_group,
    is_initialized,
    new_group,
    new_secret,
)
from dtrain.parallel.collectives import (
    all_gather,
    all_gather_into_tensor,
    all_reduce,
    barrier,
    broadcast,
    irecv,
    isend,
    recv,
    reduce,
    reduce_scatter,
    reduce_scatter_tensor,
    send,
)
from dtrain.parallel.ddp import (
    DistributedDataParallel,
    GradBucket,
    allreduce_hook,
    fp16_compress_hook,
)
from dtrain.parallel.ddp_stats import DDPStats
from dtrain.parallel.errors import CollectiveError, RendezvousError
from dtrain.parallel.group import ProcessGroup
from dtrain.parallel.local_device import local_device
from dtrain.parallel.objects import all_gather_object, broadcast_object_list
from dtrain.parallel.reduce_op import ReduceOp
from dtrain.parallel.sampler import DistributedSampler
from dtrain.parallel.sync_batchnorm import SyncBatchNorm
from dtrain.parallel.work import Work

__all__ = [
    "SyncBatchNorm",
    "DDPStats",
    "DistributedDataParallel",
    "DistributedSampler",
    "GradBucket",
    "allreduce_hook",
    "fp16_compress_hook",
    "CollectiveError",
    "GroupMember",
    "ProcessGroup",
    "ReduceOp",
    "RendezvousError",
    "Work",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "all_reduce",
    "barrier",
    "broadcast",
    "broadcast_object_list",
    "destroy_process_group",
    "get_backend",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "irecv",
    "is_initialized",
    "isend",
    "local_device",
    "new_group",
    "new_secret",
    "recv",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "send",
]
