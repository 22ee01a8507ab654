"""What the benchmarks in bench/ share: BLAS thread control, timing in turns, machine facts.

Imported by the scripts next to it (``python bench/<script>.py`` puts bench/ on the path).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import resource
import time
from collections.abc import Callable
from typing import Any

try:
    from tqdm import tqdm
except ImportError:  # tqdm is optional: no progress bar then
    tqdm = None

BLOCK_PAUSE_S = 0.2  # OpenBLAS workers spin ~0.1 s after a call before they sleep


def _openblas_libraries() -> list[ctypes.CDLL]:
    """The OpenBLAS libraries loaded into this process (numpy's among them), via ctypes."""
    paths = set()
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "openblas" in os.path.basename(path).lower() and ".so" in path:
                paths.add(path)
    libraries = []
    for path in sorted(paths):
        with contextlib.suppress(OSError):
            libraries.append(ctypes.CDLL(path))
    return libraries


_OPENBLAS_PREFIXES = ("scipy_openblas_", "openblas_")
_OPENBLAS_SUFFIXES = ("64_", "")


def _openblas_function(library: ctypes.CDLL, name: str) -> Any:
    for prefix in _OPENBLAS_PREFIXES:
        for suffix in _OPENBLAS_SUFFIXES:
            function = getattr(library, f"{prefix}{name}{suffix}", None)
            if function is not None:
                return function
    return None


def set_numpy_threads(threads: int) -> str:
    """Set numpy's OpenBLAS thread count now (it reads the environment only at import).

    Returns a one-line description of what numpy's BLAS now uses.
    """
    for library in _openblas_libraries():
        set_threads = _openblas_function(library, "set_num_threads")
        get_threads = _openblas_function(library, "get_num_threads")
        corename = _openblas_function(library, "get_corename")
        if set_threads is None or get_threads is None:
            continue
        set_threads(ctypes.c_int(threads))
        core = ""
        if corename is not None:
            corename.restype = ctypes.c_char_p
            core = f", core {corename().decode()}"
        return f"OpenBLAS, {get_threads()} threads{core}"
    return "BLAS threads not settable from here (no OpenBLAS found); set OPENBLAS_NUM_THREADS"


# ---- timing ---------------------------------------------------------------------------------
def time_variants(
    variants: dict[str, Callable[[], Any]],
    warmup: int,
    steps: int,
    rounds: int,
    progress: bool,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seconds of ``steps`` timed calls per variant, in ``rounds`` blocks per variant, and
    each variant's mean minor page faults per timed step.

    Each round runs every variant in turn: a pause, ``warmup`` untimed steps, then its share
    of the timed steps. Rounds spread a slow spell of a shared machine over all variants;
    whole blocks (not single steps) keep numpy's OpenBLAS threads and torch's OpenMP threads
    apart, since each pool keeps spinning for a while after its last call and would steal the
    cores from the next variant. The pause lets the previous pool go to sleep.
    """
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    faults = dict.fromkeys(names, 0)
    shares = [steps // rounds + (1 if r < steps % rounds else 0) for r in range(rounds)]
    bar = None
    if progress and tqdm is not None:
        bar = tqdm(total=steps * len(names), unit="step", leave=False)
    for share in shares:
        for name in names:
            step = variants[name]
            time.sleep(BLOCK_PAUSE_S)
            for _ in range(warmup):
                step()
            faults_before = minor_faults()
            for _ in range(share):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
                if bar is not None:
                    bar.update()
            faults[name] += minor_faults() - faults_before
    if bar is not None:
        bar.close()
    return times, {name: faults[name] / steps for name in names}


def cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) CPU ticks of the machine so far, from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    return (fields[7], sum(fields[:8])) if len(fields) >= 8 else None


def minor_faults() -> int:
    """Minor page faults of this process so far (first touches of freshly mapped memory)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# ---- machine --------------------------------------------------------------------------------
def cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"
