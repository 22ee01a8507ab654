"""``dtrain.utils.checkpoint``: activation checkpointing, as ``torch.utils.checkpoint``.

Differences from PyTorch: ``use_reentrant`` is accepted but there is one implementation
(it behaves as PyTorch's non-reentrant one: no warning when it is left out); a tuple output
is recomputed once per output tensor that gets a gradient; ``context_fn`` is not supported.
"""

from dtrain._tensor.autograd.checkpoint import checkpoint, checkpoint_sequential

__all__ = ["checkpoint", "checkpoint_sequential"]
