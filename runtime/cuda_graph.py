"""Capture GPU work as a CUDA graph and replay it: a whole training step in one launch.

cupy dispatches each kernel in about 20 µs, so a small model's step is bound by launches,
not by the GPU. A CUDA graph records every kernel of one step once; a replay then costs one
launch. The API follows ``torch.cuda.CUDAGraph`` / ``torch.cuda.graph``::

    step(static_x, static_y)                  # warm up: builds kernels, optimizer state
    optimizer.zero_grad(set_to_none=True)     # grads allocated inside the graph, not added to
    graph = dt.cuda.CUDAGraph()
    with dt.cuda.graph(graph):
        loss = step(static_x, static_y)       # recorded, not run
    for x, y in batches:
        static_x.copy_(x); static_y.copy_(y)  # new data into the captured inputs
        graph.replay()                        # loss, grads and parameters update

Rules, as in PyTorch: the captured code must not synchronise with the host (no ``.item()``,
no printing of values, no host-side checks of values); shapes are fixed; Python runs once,
during the capture, so Python-side state (a learning-rate schedule read as a float, a
random mask drawn on the host) is frozen into the graph. Memory the capture allocates comes
from a pool private to the graph and stays reserved while the graph lives, because every
replay writes the same addresses.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import Counter
from typing import Any

from dtrain.runtime import cublas
from dtrain.runtime.backend import cupy_module, require_cupy

_capturing = threading.local()


def is_current_stream_capturing() -> bool:
    """True while this thread is recording a CUDA graph (ops must not sync with the host)."""
    return getattr(_capturing, "graph", None) is not None


class CUDAGraph:
    """A recorded sequence of GPU work that ``replay()`` runs again with one launch."""

    def __init__(self) -> None:
        self._graph: Any = None
        self._pool: Any = None
        self._stream: Any = None
        self._counter: Any = None
        self._contexts: list = []

    def pool(self) -> Any:
        """The memory pool of this graph; pass it to another capture to share its memory."""
        return self._pool

    def capture_begin(self, pool: Any = None) -> None:
        """Start recording the work this thread queues on the GPU (see ``graph``)."""
        cupy = require_cupy("CUDA graph capture")
        if self._graph is not None or self._stream is not None:
            raise RuntimeError(
                "capture_begin: this CUDAGraph already holds a capture; call reset() first "
                "or create a new CUDAGraph"
            )
        if is_current_stream_capturing():
            raise RuntimeError("capture_begin: a capture is already running on this thread")
        self._pool = pool if pool is not None else cupy.cuda.MemoryPool()
        # Capture is refused on the legacy default stream: record on a stream of our own
        # that first waits for everything already queued.
        origin = cupy.cuda.get_current_stream()
        self._stream = cupy.cuda.Stream(non_blocking=True)
        self._stream.wait_event(origin.record())
        stream_context = self._stream
        allocator_context = cupy.cuda.using_allocator(self._pool.malloc)
        stream_context.__enter__()
        self._contexts = [stream_context]
        try:
            self._make_done_counter(cupy)
            allocator_context.__enter__()
            self._contexts.insert(0, allocator_context)
            cublas.bind_stream(self._stream)  # before the capture: binding is not capturable
            # Relaxed: the private pool may cudaMalloc during the capture.
            relaxed = getattr(cupy.cuda.runtime, "streamCaptureModeRelaxed", 2)
            self._stream.begin_capture(mode=relaxed)
        except BaseException:
            self._leave()
            self.reset()  # so this CUDAGraph can try again
            raise
        _capturing.graph = self

    def _make_done_counter(self, cupy: Any) -> None:
        """Make the capture stream's counter for the kernels that finish a reduction in
        their last block (``kernels.build.done_counter``) before the capture: from the
        default pool, not the graph's, and zeroed before any replay can run."""
        from dtrain.runtime.kernels import build

        build.done_counter(cupy, cupy.cuda.Device().id)
        self._stream.synchronize()  # zeroed before a replay, on whichever stream

    def _keep_done_counter(self) -> None:
        """Take the capture stream's counter out of the table: the graph keeps it alive for
        its replays, and no later stream that reuses this stream's handle shares it."""
        from dtrain.runtime.kernels import build

        cupy = require_cupy("CUDA graph capture")
        self._counter = build.release_done_counter(cupy.cuda.Device().id, self._stream.ptr)

    def capture_end(self) -> None:
        """Stop recording; the graph is then ready to ``replay()``."""
        if getattr(_capturing, "graph", None) is not self:
            raise RuntimeError("capture_end: this graph is not capturing; call capture_begin()")
        try:
            # Always end the capture: a stream left capturing breaks all later work on it.
            self._graph = self._stream.end_capture()
        finally:
            _capturing.graph = None
            self._leave()
        if hasattr(self._graph, "upload"):  # load it onto the GPU now, not at first replay
            self._graph.upload()

    def _leave(self) -> None:
        for context in self._contexts:
            context.__exit__(None, None, None)
        self._contexts = []
        if self._stream is not None:
            self._keep_done_counter()

    def replay(self) -> None:
        """Run the recorded work again, on the current stream."""
        if self._graph is None:
            raise RuntimeError("replay: nothing was captured; capture a step first")
        cupy = require_cupy("CUDA graph replay")
        self._graph.launch(stream=cupy.cuda.get_current_stream())

    def reset(self) -> None:
        """Drop the recording and its memory pool."""
        self._graph = self._pool = self._stream = self._counter = None

    def debug_dot(self, verbose: bool = False) -> str:
        """The captured graph in Graphviz DOT (``cudaGraphDebugDotPrint``): one node per
        kernel launch, memset or copy of the step, which ``node_counts`` tallies."""
        if self._graph is None:
            raise RuntimeError("debug_dot: nothing was captured; capture a step first")
        cupy = require_cupy("CUDA graph debug output")
        flags = cupy.cuda.runtime.cudaGraphDebugDotFlagsVerbose if verbose else 0
        return self._graph.debug_dot_str(flags)


# A node starts its line ("graph_1_node_0"[...];); an edge names two ("a" -> "b" [...];).
_NODE = re.compile(r'^[ \t]*"(graph_\d+_node_\d+)"\s*\[(.*?)\]\s*;?\s*$', re.S | re.M)
_LABEL = re.compile(r'label\s*=\s*"(.*?)(?<!\\)"', re.S)
# The verbose dump's record label of a kernel: {KERNEL | {ID | 0 (topoId: 3) | NAME\<\<\<...
_RECORD_KERNEL = re.compile(r"\{\s*ID\s*\|\s*\d+[^|]*\|\s*([^|{}\\]+)")


def node_counts(dot: str) -> Counter:
    """How many nodes of each kind a DOT dump of a CUDA graph holds: a kernel by its name
    (demangled where it is a plain or namespaced C++ symbol, template and argument lists
    dropped), other nodes by their kind (MEMSET, MEMCPY...). Both of
    ``cudaGraphDebugDotPrint``'s layouts are read: a rectangle whose label is the node
    number and the kernel's signature, and the verbose record ``{KERNEL | {ID | n | name``.
    The total is the number of launches the step queues, for comparing steps and
    libraries."""
    counts: Counter = Counter()
    for _, attributes in _NODE.findall(dot):
        label = _LABEL.search(attributes)
        text = label.group(1).replace("\\n", "\n") if label else ""
        if text.lstrip().startswith("{"):  # a record: its first field is the node's kind
            kind = text.lstrip("{ \n").split("|", 1)[0].strip() or "?"
            kernel = _RECORD_KERNEL.search(text) if kind == "KERNEL" else None
            counts[_demangled(kernel.group(1).strip()) if kernel else kind] += 1
            continue
        names = [line.strip() for line in text.splitlines() if re.search(r"[A-Za-z_]", line)]
        name = names[0].strip("{|} ").removeprefix("void ") if names else "?"
        if name.startswith("_Z"):  # the mangled symbol (the H100's dumps, 2026-11-28)
            counts[_demangled(name.split()[0])] += 1
            continue
        counts[re.split(r"[<(]", name, maxsplit=1)[0].strip() or name] += 1
    return counts


def _demangled(symbol: str) -> str:
    """The name in an Itanium-mangled C++ symbol (``_Z18layer_norm_forwardIfEv...`` ->
    ``layer_norm_forward``; ``_ZN2at6native4addE...`` -> ``at::native::add``); anything
    else as it is."""
    nested = symbol.startswith("_ZN")
    if not (nested or symbol.startswith("_Z")):
        return symbol
    at = 3 if nested else 2
    if symbol.startswith("L", at):  # _ZL: internal linkage (a static kernel)
        at += 1
    parts = []
    while (digits := re.match(r"[0-9]{1,6}", symbol[at:])) is not None:
        at += len(digits.group())
        parts.append(symbol[at : at + int(digits.group())])
        at += int(digits.group())
        if not nested:
            break
    return "::".join(parts) or symbol


class graph:  # noqa: N801 - named as torch.cuda.graph, a context manager
    """Context manager that captures the enclosed GPU work into ``cuda_graph``.

    Args:
        cuda_graph: the ``CUDAGraph`` to record into.
        pool: memory pool to allocate from (another graph's ``pool()`` to share memory).
    """

    def __init__(self, cuda_graph: CUDAGraph, pool: Any = None) -> None:
        self.cuda_graph = cuda_graph
        self.pool = pool

    def __enter__(self) -> CUDAGraph:
        cupy = require_cupy("CUDA graph capture")
        cupy.cuda.get_current_stream().synchronize()  # no stray work ahead of the capture
        self.cuda_graph.capture_begin(pool=self.pool)
        return self.cuda_graph

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        if exc_type is None:
            self.cuda_graph.capture_end()
            return
        # The body failed: end the capture, drop it, and let the body's error show.
        with contextlib.suppress(Exception):
            self.cuda_graph.capture_end()
        self.cuda_graph.reset()


def synchronize() -> None:
    """Wait for all work on the current GPU (no-op without CUDA)."""
    cupy = cupy_module()
    if cupy is not None:
        cupy.cuda.get_current_stream().synchronize()
        cupy.cuda.Device().synchronize()
