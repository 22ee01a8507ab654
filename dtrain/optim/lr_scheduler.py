"""``dtrain.optim.lr_scheduler``: learning-rate schedulers, as ``torch.optim.lr_scheduler``."""

from dtrain._tensor.optim.cyclic import CyclicLR, MultiplicativeLR
from dtrain._tensor.optim.lr_scheduler import (
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    SequentialLR,
    StepLR,
    _LRScheduler,
)
from dtrain._tensor.optim.lr_scheduler_extra import (
    ChainedScheduler,
    ConstantLR,
    CosineAnnealingWarmRestarts,
    ExponentialLR,
    PolynomialLR,
)
from dtrain._tensor.optim.one_cycle import OneCycleLR
from dtrain._tensor.optim.plateau import ReduceLROnPlateau

__all__ = [
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
    "_LRScheduler",
]
