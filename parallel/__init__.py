"""Process groups, collectives (nccl | mpi | tcp) and DistributedDataParallel — to come."""

__all__: list = []
