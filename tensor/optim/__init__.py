"""Optimizers (SGD, Adam, AdamW) and learning-rate schedulers (public as ``dtrain.optim``)."""

from dtrain._tensor.optim import lr_scheduler
from dtrain._tensor.optim.adam import Adam, AdamW
from dtrain._tensor.optim.optimizer import Optimizer
from dtrain._tensor.optim.sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "lr_scheduler"]
