"""``CTCLoss``: the connectionist temporal classification loss as a module."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.nn.functional.loss_ctc import ctc_loss
from dtrain._tensor.nn.modules.loss import _Loss
from dtrain._tensor.tensor import Tensor


class CTCLoss(_Loss):
    """``forward(log_probs, targets, input_lengths, target_lengths)``; see
    ``functional.ctc_loss`` (``reduction="mean"`` divides each loss by its target length
    before averaging, as PyTorch)."""

    def __init__(
        self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False
    ) -> None:
        super().__init__(reduction=reduction)
        self.blank, self.zero_infinity = blank, zero_infinity

    def forward(
        self, log_probs: Tensor, targets: Tensor, input_lengths: Any, target_lengths: Any
    ) -> Tensor:
        return ctc_loss(
            log_probs,
            targets,
            input_lengths,
            target_lengths,
            self.blank,
            self.reduction,
            self.zero_infinity,
        )
