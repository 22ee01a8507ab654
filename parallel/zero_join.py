"""The ``JoinHook`` of ``ZeroRedundancyOptimizer``: what a rank out of inputs runs for each
step of the ranks still training."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dtrain.parallel.join import JoinHook

if TYPE_CHECKING:
    from dtrain.parallel.zero import ZeroRedundancyOptimizer


class ZeROJoinHook(JoinHook):
    """A joined rank's side of each step of the active ranks: its own shard's step, with
    the gradients it holds (as torch: DDP's shadow leaves them as they are), and the
    parameter broadcasts. Nothing to do once every rank joined."""

    def __init__(self, zero: ZeroRedundancyOptimizer) -> None:
        self.zero = zero

    def main_hook(self) -> None:
        # Without step()'s notify: the join context answers that all-reduce itself (torch
        # calls step(), one all-reduce too many when the optimizer is the first joinable).
        self.zero._step_and_sync(None, {})


__all__ = ["ZeROJoinHook"]
