"""``dtrain.optim``: optimizers and learning-rate schedulers, as ``torch.optim`` names them.

import dtrain.optim as optim
opt = optim.AdamW(model.parameters(), lr=3e-4)
sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=1000)
"""

from dtrain._tensor.optim import SGD, Adam, AdamW, Optimizer
from dtrain.optim import lr_scheduler

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "lr_scheduler"]
