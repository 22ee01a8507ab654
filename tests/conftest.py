"""Options for the whole suite.

``--device=cuda`` runs the op tests that build their inputs through the ``check`` fixture
(tests/tensor) with those inputs on the GPU, compared with the same numpy references and
finite differences as on the CPU: one switch puts every op, forward and backward, through
the cupy backend. ``bench/gpu_check.sh`` uses it on the GPU machine.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="where the op tests' inputs live (cuda needs cupy and a GPU)",
    )


@pytest.fixture(scope="session")
def test_device(request: pytest.FixtureRequest) -> str:
    """The device named by ``--device``; skips the test when it is cuda and CUDA is absent."""
    device = request.config.getoption("--device")
    if device == "cuda":
        import dtrain as dt

        if not dt.cuda_is_available():
            pytest.skip("--device=cuda needs cupy and a CUDA GPU")
    return device
