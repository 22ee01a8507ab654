"""Optimizers (SGD, Adam, AdamW, NAdam, RAdam, Adamax, RMSprop, Adagrad, Adadelta, LBFGS) and
learning-rate schedulers (public as ``dtrain.optim``)."""

from dtrain._tensor.optim import lr_scheduler
from dtrain._tensor.optim.adadelta import Adadelta
from dtrain._tensor.optim.adagrad import Adagrad
from dtrain._tensor.optim.adam import Adam, AdamW
from dtrain._tensor.optim.adam_variants import Adamax, NAdam, RAdam
from dtrain._tensor.optim.lbfgs import LBFGS
from dtrain._tensor.optim.optimizer import Optimizer
from dtrain._tensor.optim.rmsprop import RMSprop
from dtrain._tensor.optim.sgd import SGD

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
]
