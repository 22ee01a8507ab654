"""``dtrain info``: versions, optional backends and devices — for bug reports."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import sys

#: Optional packages, the extra that installs each, and what dtrain uses it for.
OPTIONAL = (
    ("cupy", "cuda", "CUDA tensors and kernels"),
    ("mpi4py", "mpi", "the mpi backend"),
    ("ray", "ray", "dtrain launch"),
    ("torch", None, "benchmark baselines only"),
)


def _version(module: str) -> str | None:
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return getattr(importlib.import_module(module), "__version__", "unknown version")
    except Exception:  # a broken install is reported as missing, with no traceback
        return None


def _cuda_devices() -> list[str]:
    from dtrain.runtime.backend import cupy_module

    cupy = cupy_module()
    if cupy is None:
        return []
    names = []
    for index in range(cupy.cuda.runtime.getDeviceCount()):
        props = cupy.cuda.runtime.getDeviceProperties(index)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        names.append(f"cuda:{index} {name} ({props['totalGlobalMem'] / 2**30:.0f} GiB)")
    return names


def _nccl_version() -> str | None:
    from dtrain.runtime.backend import cupy_module

    cupy = cupy_module()
    if cupy is None:
        return None
    try:
        from cupy.cuda import nccl

        return str(nccl.get_version())
    except Exception:
        return None


def collect() -> list[tuple[str, str]]:
    """(label, value) rows describing this machine as dtrain sees it."""
    import numpy

    import dtrain

    rows = [
        ("dtrain", dtrain.__version__),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("platform", platform.platform()),
        ("numpy", numpy.__version__),
    ]
    for module, extra, purpose in OPTIONAL:
        version = _version(module)
        if version is None:
            hint = f"; pip install 'dtrain[{extra}]'" if extra else ""
            rows.append((module, f"missing ({purpose}{hint})"))
        else:
            rows.append((module, version))
    nccl = _nccl_version()
    missing = "not available (needs cupy, a GPU and NCCL: pip install 'dtrain[nccl]')"
    rows.append(("nccl", nccl if nccl else missing))
    rows.append(("cpus", str(os.cpu_count())))
    cuda = _cuda_devices()
    rows.append(("cuda devices", "; ".join(cuda) if cuda else "none"))
    rows.append(("this process's device", _local_device()))
    return rows


def _local_device() -> str:
    """What ``dtrain.parallel.local_device()`` picks here (and so the examples' --device auto),
    or why it cannot."""
    import warnings

    from dtrain.parallel import local_device

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            device = str(local_device())
        except ValueError as exc:
            return f"error: {exc}"
    return device + "".join(f" ({warning.message})" for warning in caught)


def render() -> str:
    """The ``dtrain info`` report as text."""
    rows = collect()
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
