"""Optimizers (SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta) and learning-rate schedulers
(public as ``dtrain.optim``)."""

from dtrain._tensor.optim import lr_scheduler
from dtrain._tensor.optim.adadelta import Adadelta
from dtrain._tensor.optim.adagrad import Adagrad
from dtrain._tensor.optim.adam import Adam, AdamW
from dtrain._tensor.optim.optimizer import Optimizer
from dtrain._tensor.optim.rmsprop import RMSprop
from dtrain._tensor.optim.sgd import SGD

__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "lr_scheduler"]
