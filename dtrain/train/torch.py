"""``dtrain.train.torch``: Ray Train's ``ray.train.torch`` names — ``TorchTrainer``,
``TorchConfig``, ``prepare_model``, ``prepare_data_loader``, ``get_device``, ``get_devices``
and ``enable_reproducibility`` — for dtrain models and DataLoaders."""

from dtrain.launch.trainer import TorchTrainer
from dtrain.launch.trainer_config import TorchConfig
from dtrain.launch.trainer_torch import (
    enable_reproducibility,
    get_device,
    get_devices,
    prepare_data_loader,
    prepare_model,
)

__all__ = [
    "TorchConfig",
    "TorchTrainer",
    "enable_reproducibility",
    "get_device",
    "get_devices",
    "prepare_data_loader",
    "prepare_model",
]
