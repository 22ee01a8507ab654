"""``dtrain.optim.optimizer``: the ``Optimizer`` base class, as ``torch.optim.optimizer``."""

from dtrain._tensor.optim.optimizer import Optimizer, required

__all__ = ["Optimizer", "required"]
