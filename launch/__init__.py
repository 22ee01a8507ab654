"""The ``dtrain`` command line (``dtrain --version``, ``dtrain info``)."""

from dtrain.launch.cli import main

__all__ = ["main"]
