"""``dt.onnx``: the name exists so scripts that ``import torch.onnx`` (pytorch/examples'
word_language_model and fast_neural_style do, for an optional export) import; exporting
is not offered."""

from __future__ import annotations

from typing import Any


def export(*args: Any, **kwargs: Any) -> None:
    """Not offered: raises. Save ``model.state_dict()`` with ``dt.save`` instead, or load
    it into the PyTorch model and export from there."""
    raise NotImplementedError(
        "dtrain.onnx.export: exporting to ONNX is not offered; save model.state_dict() with "
        "dt.save, load it into the same PyTorch model and call torch.onnx.export there"
    )


def is_in_onnx_export() -> bool:
    """False: dtrain never exports."""
    return False


__all__ = ["export", "is_in_onnx_export"]
