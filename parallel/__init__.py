"""``dtrain.parallel``: process groups and collectives over tcp, mpi or nccl, with
torch.distributed's names and semantics."""

from dtrain.parallel.api import (
    Backend,
    GroupMember,
    destroy_process_group,
    get_backend,
    get_default_backend_for_device,
    get_global_rank,
    get_group_rank,
    get_process_group_ranks,
    get_rank,
    get_world_size,
    group,
    init_process_group,
    is_available,
    is_gloo_available,
    is_initialized,
    is_mpi_available,
    is_nccl_available,
    is_torchelastic_launched,
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
    monitored_barrier,
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
from dtrain.parallel.errors import CollectiveError, ProcessGroupStateError, RendezvousError
from dtrain.parallel.join import Join, Joinable, JoinHook
from dtrain.parallel.local_device import local_device
from dtrain.parallel.objects import (
    all_gather_object,
    broadcast_object_list,
    gather_object,
    recv_object_list,
    scatter_object_list,
    send_object_list,
)
from dtrain.parallel.p2p_batch import P2POp, batch_isend_irecv
from dtrain.parallel.process_group import ProcessGroup
from dtrain.parallel.reduce_op import ReduceOp
from dtrain.parallel.sampler import DistributedSampler
from dtrain.parallel.scatter_gather import all_to_all, all_to_all_single, gather, scatter
from dtrain.parallel.subgroups import new_subgroups, new_subgroups_by_enumeration
from dtrain.parallel.sync_batchnorm import SyncBatchNorm
from dtrain.parallel.work import Future, Work
from dtrain.parallel.zero import ZeroRedundancyOptimizer

__all__ = [
    "SyncBatchNorm",
    "DDPStats",
    "DistributedDataParallel",
    "DistributedSampler",
    "GradBucket",
    "Join",
    "JoinHook",
    "Joinable",
    "allreduce_hook",
    "fp16_compress_hook",
    "Backend",
    "CollectiveError",
    "Future",
    "P2POp",
    "GroupMember",
    "ProcessGroup",
    "ProcessGroupStateError",
    "ReduceOp",
    "RendezvousError",
    "Work",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "all_reduce",
    "all_to_all",
    "all_to_all_single",
    "barrier",
    "batch_isend_irecv",
    "broadcast",
    "broadcast_object_list",
    "destroy_process_group",
    "gather",
    "gather_object",
    "get_backend",
    "get_default_backend_for_device",
    "get_global_rank",
    "get_group_rank",
    "get_process_group_ranks",
    "get_rank",
    "get_world_size",
    "group",
    "init_process_group",
    "irecv",
    "is_available",
    "is_gloo_available",
    "is_initialized",
    "is_mpi_available",
    "is_nccl_available",
    "is_torchelastic_launched",
    "isend",
    "local_device",
    "monitored_barrier",
    "new_group",
    "new_secret",
    "new_subgroups",
    "new_subgroups_by_enumeration",
    "recv",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "scatter",
    "scatter_object_list",
    "send_object_list",
    "recv_object_list",
    "send",
    "ZeroRedundancyOptimizer",
]
