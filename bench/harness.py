"""What the benchmarks in bench/ share: BLAS thread control, timing in turns, machine facts.

Imported by the scripts next to it (``python bench/<script>.py`` puts bench/ on the path).
"""

from __future__ import annotations

import contextlib
import cProfile
import ctypes
import importlib
import io
import os
import platform
import pstats
import resource
import statistics
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

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


def own_cpu_ticks() -> int:
    """CPU ticks (user + system, all threads) this process has used so far; 0 elsewhere."""
    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


def _idle_ticks() -> int:
    """Idle + iowait CPU ticks of the machine so far, from /proc/stat; 0 elsewhere."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0
    return fields[3] + fields[4]


class LoadMeter:
    """Share of the machine's CPU time that went to other processes, and to the hypervisor
    (steal), between ``start()`` and ``stop()``, read from /proc: a gauge of the noise.

    On the 2-core VM where another job runs a test suite this reads 40-50 %, and the
    timings of either library swing by up to 2x; near 0 % runs repeat within a few per cent.
    """

    def start(self) -> None:
        self._machine, self._idle, self._own = cpu_ticks(), _idle_ticks(), own_cpu_ticks()

    def stop(self) -> str:
        machine = cpu_ticks()
        if machine is None or self._machine is None:
            return "CPU time while timing: unknown (no /proc/stat)"
        steal = machine[0] - self._machine[0]
        total = max(machine[1] - self._machine[1], 1)
        busy = total - (_idle_ticks() - self._idle)
        others = max(busy - steal - (own_cpu_ticks() - self._own), 0)
        note = "" if others + steal <= 0.1 * total else " (a busy machine: timings are noisy)"
        return (
            f"CPU time while timing: other processes {others / total:.0%}, stolen by the "
            f"hypervisor {steal / total:.0%}{note}"
        )


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


# ---- checks, tables, profiles ---------------------------------------------------------------
def relative_error(value: Any, reference: Any) -> float:
    """max |value - reference| / max |reference| (0 when both are 0)."""
    value = np.asarray(value, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    scale = np.abs(reference).max()
    diff = np.abs(value - reference).max()
    return float(diff / scale) if scale else float(diff)


def print_timings(times: dict[str, list[float]], faults: dict[str, float]) -> dict[str, float]:
    """Print median, min, max ms and page faults per step of each variant; return medians."""
    medians = {name: statistics.median(values) for name, values in times.items()}
    width = max(12, *(len(name) for name in times))
    print(
        f"{'variant':{width}s} {'median ms':>10s} {'min ms':>8s} {'max ms':>8s} "
        f"{'page faults/step':>17s}"
    )
    for name, values in times.items():
        print(
            f"{name:{width}s} {medians[name] * 1e3:10.2f} {min(values) * 1e3:8.2f} "
            f"{max(values) * 1e3:8.2f} {faults[name]:17.0f}"
        )
    return medians


def profile(step: Callable[[], Any], steps: int, top: int = 25) -> str:
    """cProfile ``steps`` calls of ``step``: the top functions by own and cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def import_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (and its ``common`` helper) from this checkout."""
    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    if examples not in sys.path:
        sys.path.insert(0, examples)
    return importlib.import_module(name)


def to_torch_state(state: dict[str, Any]) -> dict[str, Any]:
    """A dtrain ``state_dict()`` as torch tensors (copies), for ``torch_model.load_state_dict``."""
    import torch  # only the scripts that compare with torch call this

    return {key: torch.from_numpy(np.array(value.numpy())) for key, value in state.items()}
