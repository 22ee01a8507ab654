"""Process-wide switches PyTorch scripts set: BLAS threads, determinism, anomaly
detection, and ``compile`` (which dtrain does not do)."""

from __future__ import annotations

import os
import warnings
from typing import Any

_state: dict[str, Any] = {
    "threads": None,
    "deterministic": False,
    "warn_only": False,
    "anomaly": False,
    "compile_warned": False,
}
_limiter: Any = None  # threadpoolctl's limit, held while set_num_threads is in force
_default_threads: int | None = None  # get_num_threads' count without set_num_threads


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for the BLAS and OpenMP pools numpy calls into (through
    threadpoolctl when it is installed; without it those keep ``OMP_NUM_THREADS``' count,
    read when Python started) and for dtrain's own threads (the depthwise convolutions'
    taps), as ``torch.set_num_threads`` sets the intra-op threads."""
    global _limiter
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    try:
        import threadpoolctl
    except ImportError:
        threadpoolctl = None
    if threadpoolctl is not None:
        if _limiter is not None:
            _limiter.restore_original_limits()
        _limiter = threadpoolctl.threadpool_limits(limits=n)
    _state["threads"] = n


def get_num_threads() -> int:
    """The intra-op thread count: ``set_num_threads``' count, else ``OMP_NUM_THREADS``, else
    the BLAS pool's count (threadpoolctl), else the CPUs this process may use (the default is
    read once, at the first call). dtrain's own threads (the depthwise convolutions') run on
    this count."""
    global _default_threads
    if _state["threads"] is not None:
        return _state["threads"]
    if _default_threads is None:
        _default_threads = _read_default_threads()
    return _default_threads


def _read_default_threads() -> int:
    """``OMP_NUM_THREADS`` (its first level), else threadpoolctl's largest pool, else the
    CPUs this process may use."""
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if first.isdigit() and int(first) > 0:
        return int(first)
    try:
        import threadpoolctl

        pools = threadpoolctl.threadpool_info()  # milliseconds: asked once
        if pools:
            return max(pool["num_threads"] for pool in pools)
    except ImportError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cpus or 1


def use_deterministic_algorithms(mode: bool, *, warn_only: bool = False) -> None:
    """Ask for deterministic algorithms, as ``torch.use_deterministic_algorithms``. On the
    CPU every dtrain op is deterministic. On CUDA, the ops that sum into repeated indices
    (the backward of ``x[int_tensor]``, ``index_select``, ``gather``, ``repeat_interleave``
    and the pads and pools that add into overlapping positions; float ``scatter_add``,
    ``index_add``, ``scatter(reduce='add')``) then add in a fixed order (sort, then a
    segmented sum) instead of with atomics, as PyTorch's do. Ops
    with no deterministic path (``bincount`` with ``weights``; the embedding backward of a
    table too large for its one-launch kernel) raise RuntimeError, or warn with
    ``warn_only=True``."""
    _state["deterministic"] = bool(mode)
    _state["warn_only"] = bool(warn_only)


def deterministic_requested() -> bool:
    """Whether ops should take their deterministic path (the mode is on, warn-only or
    not: a deterministic path costs little more and needs no warning)."""
    return _state["deterministic"]


def are_deterministic_algorithms_enabled() -> bool:
    """Whether ``use_deterministic_algorithms(True)`` is in force."""
    return _state["deterministic"]


def is_deterministic_algorithms_warn_only_enabled() -> bool:
    """Whether deterministic mode only warns."""
    return _state["deterministic"] and _state["warn_only"]


def check_deterministic(what: str) -> None:
    """Called by an op that is not deterministic (``what`` names it): raises or warns when
    deterministic algorithms were asked for, as PyTorch."""
    if not _state["deterministic"]:
        return
    message = (
        f"{what} has no deterministic implementation on CUDA (it adds with atomic operations, "
        "so float results may differ in the last bits between runs), and "
        "use_deterministic_algorithms(True) is set; run it on the CPU, or pass "
        "warn_only=True to allow it"
    )
    if _state["warn_only"]:
        warnings.warn(message, UserWarning, stacklevel=3)
    else:
        raise RuntimeError(message)


class set_detect_anomaly:  # noqa: N801 - PyTorch's name for a context manager
    """Accepted for PyTorch scripts; dtrain has no anomaly mode: backward is not traced
    for NaNs and errors carry no forward traceback. Sets the (inert) flag now, and as a
    context manager restores it on exit."""

    def __init__(self, mode: bool, check_nan: bool = True) -> None:
        self.previous = _state["anomaly"]
        _state["anomaly"] = bool(mode)

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        _state["anomaly"] = self.previous


class detect_anomaly:  # noqa: N801 - PyTorch's name for a context manager
    """``with detect_anomaly():`` is accepted and changes nothing: dtrain has no anomaly
    mode (NaNs in backward are not traced); a decorator too."""

    def __init__(self, check_nan: bool = True) -> None:
        self.previous = False

    def __enter__(self) -> None:
        self.previous = _state["anomaly"]
        _state["anomaly"] = True

    def __exit__(self, *exc: Any) -> None:
        _state["anomaly"] = self.previous

    def __call__(self, fn: Any) -> Any:
        import functools

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with detect_anomaly():
                return fn(*args, **kwargs)

        return wrapper


def is_anomaly_enabled() -> bool:
    """Whether anomaly mode was asked for (it changes nothing in dtrain)."""
    return _state["anomaly"]


def compile(model: Any = None, **kwargs: Any) -> Any:
    """Returns ``model`` unchanged: dtrain has no compiler (its ops run eagerly; the CUDA
    backend has fused kernels for the hot paths). Warns once. Also usable as a decorator,
    ``@dt.compile`` or ``@dt.compile(mode=...)``."""
    if not _state["compile_warned"]:
        _state["compile_warned"] = True
        warnings.warn(
            "dtrain.compile returns the model unchanged: dtrain has no compiler",
            UserWarning,
            stacklevel=2,
        )
    if model is None:
        return lambda fn: fn
    return model


__all__ = [
    "are_deterministic_algorithms_enabled",
    "check_deterministic",
    "compile",
    "detect_anomaly",
    "deterministic_requested",
    "get_num_threads",
    "is_anomaly_enabled",
    "is_deterministic_algorithms_warn_only_enabled",
    "set_detect_anomaly",
    "set_num_threads",
    "use_deterministic_algorithms",
]
