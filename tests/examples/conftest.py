"""Make ``examples/`` importable (the scripts import their neighbour ``common``), and keep
their ``--device auto`` on the CPU: these are CPU tests, also on a machine with a GPU (the
GPU runs are marked ``gpu`` and ask for ``--device cuda``)."""

import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


@pytest.fixture(autouse=True)
def _examples_on_the_cpu(monkeypatch):
    monkeypatch.setenv("DTRAIN_DEVICE", "cpu")
