"""``dtrain.optim``: optimizers and learning-rate schedulers, as ``torch.optim`` names them.

import dtrain.optim as optim
opt = optim.AdamW(model.parameters(), lr=3e-4)
sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=1000)
"""

from dtrain._tensor.optim import (
    LBFGS,
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    NAdam,
    Optimizer,
    RAdam,
    RMSprop,
)
from dtrain.optim import lr_scheduler, optimizer

__all__ = [
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "LBFGS",
    "NAdam",
    "Optimizer",
    "RAdam",
    "RMSprop",
    "lr_scheduler",
    "optimizer",
]
