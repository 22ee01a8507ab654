"""Options for the whole suite.

``--device=cuda`` runs the op tests that build their inputs through the ``check`` fixture
(tests/tensor) with those inputs on the GPU, compared with the same numpy references and
finite differences as on the CPU: one switch puts every op, forward and backward, through
the cupy backend. ``bench/gpu_check.sh`` uses it on the GPU machine.

``--device=emulated-cuda`` does the same without a GPU: the session runs under
``tests/runtime/cuda_emulator.py`` (cupy stood in for by numpy, every kernel launch run by
the kernel's own CUDA C compiled with g++), so every op takes its CUDA branch. Meant for
``tests/tensor`` (CI runs it there); tests marked ``gpu`` need a real device and are skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        choices=("cpu", "cuda", "emulated-cuda"),
        help="where the op tests' inputs live (cuda needs cupy and a GPU; emulated-cuda runs "
        "the CUDA paths on the CPU and needs g++)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--device") != "emulated-cuda":
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent / "runtime"))
    import host_cuda
    from cuda_emulator import install

    if host_cuda.compiler() is None:
        raise pytest.UsageError("--device=emulated-cuda needs a C++ compiler (g++) on PATH")
    config.emulator_patch = pytest.MonkeyPatch()
    install(config.emulator_patch, kernels="source")


def pytest_unconfigure(config: pytest.Config) -> None:
    patch = getattr(config, "emulator_patch", None)
    if patch is not None:
        patch.undo()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--device") != "emulated-cuda":
        return
    skip = pytest.mark.skip(reason="needs a real GPU (--device=emulated-cuda skips gpu tests)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def test_device(request: pytest.FixtureRequest) -> str:
    """The device named by ``--device``; skips the test when it is cuda and CUDA is absent."""
    device = request.config.getoption("--device")
    if device == "emulated-cuda":
        return "cuda"
    if device == "cuda":
        import dtrain as dt

        if not dt.cuda_is_available():
            pytest.skip("--device=cuda needs cupy and a CUDA GPU")
    return device
