"""``dtrain.train``: Ray Train's API (``ray.train``) on top of ``dtrain launch``.

``TorchTrainer`` (in ``dtrain.train.torch``) runs a training function on N workers, each a
fresh process and one rank of a ``dtrain launch`` job; inside it, ``report``,
``get_context`` and ``get_checkpoint`` work as in Ray Train 2. Functions travel by reference
and configs and metrics as JSON: nothing is pickled. ``docs/launch.md`` ("A Ray Train-shaped
API") says how it maps onto the launcher and where it differs from Ray Train.
"""

from dtrain.launch.trainer import Result, TrainingFailedError
from dtrain.launch.trainer_checkpoint import Checkpoint
from dtrain.launch.trainer_config import (
    CheckpointConfig,
    FailureConfig,
    RunConfig,
    ScalingConfig,
)
from dtrain.launch.trainer_session import TrainContext, get_checkpoint, get_context, report

__all__ = [
    "Checkpoint",
    "CheckpointConfig",
    "FailureConfig",
    "Result",
    "RunConfig",
    "ScalingConfig",
    "TrainContext",
    "TrainingFailedError",
    "get_checkpoint",
    "get_context",
    "report",
]
