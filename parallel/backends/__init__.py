"""Transports under ``ProcessGroup``: tcp (sockets), mpi (mpi4py), nccl (cupy.cuda.nccl)."""
