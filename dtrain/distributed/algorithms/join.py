"""``dtrain.distributed.algorithms.join``: the uneven-inputs context, at torch's import path
(``from torch.distributed.algorithms.join import Join`` ported)."""

from dtrain.parallel.join import Join, Joinable, JoinHook

__all__ = ["Join", "JoinHook", "Joinable"]
