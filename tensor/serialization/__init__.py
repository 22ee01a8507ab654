"""Checkpoints: ``save``/``load`` to safetensors files with a JSON structure; never pickle."""

from dtrain._tensor.serialization.checkpoint import load, save
from dtrain._tensor.serialization.safetensors import CheckpointError

__all__ = ["CheckpointError", "load", "save"]
