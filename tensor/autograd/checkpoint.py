"""Activation checkpointing (public as ``dtrain.utils.checkpoint``): run a segment without
keeping its intermediate activations, and recompute them in backward.

``checkpoint(fn, *args, **kwargs)`` runs ``fn`` with grad enabled on detached copies of its
tensor arguments (found anywhere in nested tuples, lists and dicts), walks the graph it
recorded once to find the leaves that require grad (the parameters ``fn`` uses), and drops
that graph: only the arguments are kept. Every output tensor that requires grad (anywhere in
the output's tuples, lists, dicts and namedtuples) is routed through a tap into one hub node
(``gather.py``), whose parents are the arguments and the parameters. The engine runs the hub
once per backward, with the gradients of all outputs: it restores the random state and the
autocast state of the first run, reruns ``fn`` and backpropagates all output gradients
through the recomputed graph together, capturing (not accumulating) the gradients of the
detached arguments and of the parameters, and hands them to its parents. The outer engine
then accumulates each parameter once per backward (its post-accumulate hooks, DDP's
all-reduce trigger, fire once), and ``autograd.grad`` reaches arguments and parameters as
through any other node, without touching ``.grad``.
"""

from __future__ import annotations

import collections
import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from dtrain._tensor.amp import autocast_mode as _amp
from dtrain._tensor.autograd.engine import run_backward
from dtrain._tensor.autograd.gather import Hub, Tap, node_of, route
from dtrain._tensor.autograd.grad_mode import enable_grad
from dtrain._tensor.autograd.grad_mode import state as _grad_state
from dtrain._tensor.autograd.stale_view import refresh_if_stale
from dtrain._tensor.tensor import Tensor
from dtrain.runtime import random as _random
from dtrain.runtime.backend import cupy_module, is_cuda_array

# ---- pytrees: tensors anywhere in tuples, lists, dicts and namedtuples ------------------


def _flatten(value: Any, leaves: list) -> Any:
    """Append ``value``'s leaves (everything but tuples, lists and dicts) to ``leaves`` in
    order; return the spec ``_unflatten`` rebuilds the structure from (None: a leaf). Two
    values of the same structure have equal specs."""
    if isinstance(value, (tuple, list)):
        return (type(value), None, None, [_flatten(v, leaves) for v in value])
    if isinstance(value, dict):
        factory = getattr(value, "default_factory", None)
        children = [_flatten(v, leaves) for v in value.values()]
        return (type(value), tuple(value.keys()), factory, children)
    leaves.append(value)
    return None


def _unflatten(spec: Any, leaves: Iterator) -> Any:
    if spec is None:
        return next(leaves)
    kind, keys, factory, children = spec
    items = [_unflatten(child, leaves) for child in children]
    if keys is not None:  # a dict: the same type, keys and order
        if issubclass(kind, collections.defaultdict):
            rebuilt = kind(factory)
            rebuilt.update(zip(keys, items))
            return rebuilt
        return kind(zip(keys, items))
    if hasattr(kind, "_fields"):  # a namedtuple takes its fields one by one
        return kind(*items)
    return kind(items)


# ---- the state a recomputation needs ----------------------------------------------------


class _RngState:
    """The default generator's state and, for CUDA arguments, one seed per device drawn from
    the default generator (so ``dt.manual_seed`` makes it reproducible): cupy's generator
    state cannot be read back, so the segment's CUDA random ops run on a stream seeded with
    it, in the first run and in the recomputation alike."""

    def __init__(self, tensors: list[Tensor]) -> None:
        self.cuda: dict[int, int] = {}
        if cupy_module() is not None:
            for t in tensors:
                if is_cuda_array(t._array):
                    device = int(t._array.device.id)
                    if device not in self.cuda:
                        self.cuda[device] = int(
                            _random.default_generator.numpy.integers(0, 2**63 - 1)
                        )
        self.cpu = _random.get_rng_state()  # after the draws: the segment's own stream

    @contextlib.contextmanager
    def active(self, recompute: bool) -> Iterator[None]:
        """Run the block on this state. The recomputation restores the first run's CPU state
        and then puts the caller's back; the first run advances the caller's CPU stream as
        the segment would. The caller's cupy streams are put back in both."""
        saved_cpu = _random.get_rng_state() if recompute else None
        if recompute:
            _random.set_rng_state(self.cpu)
        saved_cuda = {}
        cupy = cupy_module() if self.cuda else None
        for device, seed in self.cuda.items():
            with cupy.cuda.Device(device):
                saved_cuda[device] = cupy.random.get_random_state()
                cupy.random.set_random_state(cupy.random.RandomState(seed))
        try:
            yield
        finally:
            for device, state in saved_cuda.items():
                with cupy.cuda.Device(device):
                    cupy.random.set_random_state(state)
            if saved_cpu is not None:
                _random.set_rng_state(saved_cpu)


def _autocast_state() -> tuple:
    """Per device type: (enabled, dtype) of the autocast state now."""
    return tuple((_amp.state.enabled[k], _amp.state.dtype[k]) for k in _amp.DEVICE_TYPES)


@contextlib.contextmanager
def _autocast_as(recorded: tuple) -> Iterator[None]:
    """Re-enter the autocast state recorded at forward. Inside a region that is still open
    (backward run under autocast) the cast cache is off: it may hold the first run's casts,
    whose graph is not the recomputation's."""
    if not _amp.state.active and not any(enabled for enabled, _ in recorded):
        yield
        return
    cache = _amp.state.cache_enabled and _amp.state.nesting == 0
    with contextlib.ExitStack() as stack:
        for kind, (enabled, dtype) in zip(_amp.DEVICE_TYPES, recorded):
            stack.enter_context(_amp.autocast(kind, dtype, enabled, cache_enabled=cache))
        yield


# ---- the graph -----------------------------------------------------------------------


def _reachable(outputs: list[Tensor]) -> tuple[list[Tensor], list[Any]]:
    """The leaves that require grad and the nodes reachable from ``outputs``."""
    leaves, nodes, seen = [], [], set()
    stack = [node_of(t) for t in outputs]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))  # every node stays alive during the walk: ids are not reused
        if isinstance(node, Tensor):
            leaves.append(node)
            continue
        nodes.append(node)
        stack.extend(p for p in node.parents if p is not None and id(p) not in seen)
    return leaves, nodes


_NONDETERMINISTIC = (
    "checkpoint: the recomputation of a segment differs from its first run ({}); a "
    "checkpointed function must return the same structure and use the same parameters every "
    "time it runs (randomness from dtrain's generators is replayed; Python's and numpy's "
    "global ones are not), and tensors created inside it must not require grad"
)
_CAPTURED = (
    "checkpoint: the segment uses a tensor that requires grad and is not a leaf, reached "
    "other than through its arguments (a closure, an attribute or a cache); dtrain "
    "recomputes only what the arguments lead to, and backpropagating that tensor's history "
    "from inside the segment would go through it twice. Pass it as an argument of "
    "checkpoint (a keyword argument works) and use the argument inside the function"
)


def _memory(array: Any) -> int:
    """A key for the allocation ``array`` lies in (views of one array share it)."""
    if is_cuda_array(array):
        return id(array.data.mem)
    return id(array if array.base is None else array.base)


def _owned(grads: list, roots: list) -> tuple:
    """``grads`` made the hub's own (it declares ``returns_own_grads``, so a parameter keeps
    its gradient as ``.grad`` without a copy): a copy where one lies in the memory of an
    incoming gradient, which the outer engine may share, or of another parent's gradient
    (an add's backward hands one array to both inputs)."""
    taken = {_memory(r) for r in roots}
    for i, grad in enumerate(grads):
        if grad is None:
            continue
        key = _memory(grad)
        if key in taken:
            grad = grads[i] = grad.copy()
            key = _memory(grad)
        taken.add(key)
    return tuple(grads)


class _CheckpointHub(Hub):
    returns_own_grads = True  # see _owned

    def name(self) -> str:
        return "CheckpointBackward"


class _CheckpointTap(Tap):
    def name(self) -> str:
        return "CheckpointOutputBackward"


class _Segment:
    """What the hub's backward needs: the function, its arguments, the states to replay,
    where the outputs that require grad are, and which tensors the gradients go to."""

    def __init__(
        self,
        function: Callable,
        spec: Any,
        flat: list,
        inputs: list[Tensor],
        rng: _RngState | None,
    ) -> None:
        self.function, self.spec, self.flat = function, spec, flat
        self.inputs, self.rng = inputs, rng
        self.autocast = _autocast_state()
        self.check_shapes = True
        self.out_spec: Any = None
        self.wanted: list[int] = []  # positions of the outputs that require grad
        self.shapes: list[tuple] = []
        self.parents: list[Tensor] = []  # the hub's parents: arguments, then parameters
        self.foreign: dict[int, weakref.ref] = {}  # nodes older than the segment

    def call(self, recompute: bool) -> tuple[Any, dict[int, Tensor]]:
        """``function`` with grad on, on detached copies of the tensor arguments."""
        copies = {id(t): t.detach().requires_grad_(t._requires_grad) for t in self.inputs}
        leaves = [copies[id(v)] if isinstance(v, Tensor) else v for v in self.flat]
        args, kwargs = _unflatten(self.spec, iter(leaves))
        rng = self.rng.active(recompute) if self.rng else contextlib.nullcontext()
        amp = _autocast_as(self.autocast) if recompute else contextlib.nullcontext()
        with rng, amp, enable_grad():
            return self.function(*args, **kwargs), copies

    def backward(self, grads: list) -> tuple:
        """The hub's backward: recompute, backpropagate every output's gradient at once,
        and return one gradient per parent."""
        count = len(self.parents)
        if all(g is None for g in grads):
            return (None,) * count
        out, copies = self.call(recompute=True)
        flat_out: list = []
        if _flatten(out, flat_out) != self.out_spec:
            raise RuntimeError(_NONDETERMINISTIC.format("its output has another structure"))
        outputs, roots = [], []
        for index, grad, shape in zip(self.wanted, grads, self.shapes):
            value = flat_out[index]
            if not isinstance(value, Tensor) or not value._requires_grad:
                raise RuntimeError(
                    _NONDETERMINISTIC.format(f"output {index} no longer requires grad")
                )
            if self.check_shapes and value._array.shape != shape:
                raise RuntimeError(
                    _NONDETERMINISTIC.format(
                        f"output {index} has shape {value._array.shape}, was {shape}"
                    )
                )
            if grad is None:
                continue
            if grad.dtype != value._array.dtype:
                grad = grad.astype(value._array.dtype)
            outputs.append(value)
            roots.append(grad)
        del out, flat_out
        # Where each gradient goes: a copy's to its argument, a parameter's to itself, and
        # an argument also reached directly (a leaf in a closure) to itself.
        slot_of = {id(p): i for i, p in enumerate(self.parents)}
        targets, slots = [], []
        for i, parent in enumerate(self.parents):
            copy = copies.get(id(parent))
            if copy is not None:
                targets.append(copy)
                slots.append(i)
        leaves, nodes = _reachable(outputs)
        foreign = self.foreign
        for node in nodes:
            ref = foreign.get(id(node))
            if ref is not None and ref() is node:
                raise RuntimeError(_CAPTURED)
        copy_ids = {id(c) for c in copies.values()}
        for leaf in leaves:
            if id(leaf) in copy_ids:
                continue
            slot = slot_of.get(id(leaf))
            if slot is None:
                raise RuntimeError(
                    _NONDETERMINISTIC.format("it used a tensor requiring grad the first did not")
                )
            targets.append(leaf)
            slots.append(slot)
        del leaves, nodes
        captured = run_backward(outputs, roots, capture=targets)
        result: list = [None] * count
        for slot, grad in zip(slots, captured):
            if grad is None:
                continue
            if result[slot] is not None:
                grad = result[slot] + grad
            if isinstance(grad, np.generic):  # numpy's ops on 0-d arrays give scalars
                grad = np.asarray(grad)
            result[slot] = grad
        return _owned(result, roots)


def checkpoint(
    function: Callable[..., Any],
    *args: Any,
    use_reentrant: bool | None = None,
    context_fn: Callable | None = None,
    determinism_check: str = "default",
    debug: bool = False,
    preserve_rng_state: bool = True,
    **kwargs: Any,
) -> Any:
    """``function(*args, **kwargs)`` without keeping its activations; backward recomputes
    them once, for all outputs (as ``torch.utils.checkpoint.checkpoint``, non-reentrant).

    Args:
        function: the segment; it returns any nesting of tuples, lists, dicts and
            namedtuples holding tensors and other values.
        *args: its positional arguments; tensors anywhere in them (nested in tuples, lists
            and dicts) are kept for the recomputation and get gradients.
        use_reentrant: accepted (True, False or None); dtrain has one implementation, which
            behaves as PyTorch's non-reentrant one.
        context_fn: only None (PyTorch's default).
        determinism_check: ``"default"`` checks that recomputed outputs have their first
            shapes; ``"none"`` skips that check.
        debug: accepted; dtrain prints no trace.
        preserve_rng_state: rerun with the random state of the first run (dropout draws the
            same masks); the caller's random streams are left as the first run left them.
        **kwargs: passed to ``function``; tensors in them are arguments as above.

    Returns:
        What ``function`` returns; its tensors that require grad (when the segment used
        anything that requires grad) are tied to the recomputation.

    Raises:
        ValueError: for an option that is not supported.
        RuntimeError: in backward, when the segment uses a non-leaf tensor that requires
            grad other than through its arguments, or its recomputation differs.
    """
    if use_reentrant not in (None, True, False):
        raise ValueError(f"checkpoint: use_reentrant={use_reentrant!r}; pass True or False")
    if context_fn is not None:
        raise ValueError(
            f"checkpoint: context_fn={context_fn!r} is not supported by dtrain (it has no "
            "saved-tensor hooks to run the recomputation under); leave it at None"
        )
    if determinism_check not in ("default", "none"):
        raise ValueError(
            f"checkpoint: determinism_check={determinism_check!r}; pass 'default' or 'none'"
        )
    if not _grad_state.enabled:
        return function(*args, **kwargs)
    flat: list = []
    spec = _flatten((args, kwargs), flat)
    inputs = list({id(v): v for v in flat if isinstance(v, Tensor)}.values())
    for t in inputs:
        if t._requires_grad:
            refresh_if_stale(t)  # a view whose base changed in place: its newest history
    rng = _RngState(inputs) if preserve_rng_state else None
    segment = _Segment(function, spec, flat, inputs, rng)
    segment.check_shapes = determinism_check == "default"
    out, copies = segment.call(recompute=False)
    flat_out: list = []
    segment.out_spec = _flatten(out, flat_out)
    wanted = [i for i, v in enumerate(flat_out) if isinstance(v, Tensor) and v._requires_grad]
    if not wanted:
        return out
    outputs = [flat_out[i] for i in wanted]
    leaves, nodes = _reachable(outputs)
    copy_ids = {id(c) for c in copies.values()}
    parents = [t for t in inputs if t._requires_grad]
    known = {id(t) for t in parents}
    for leaf in leaves:
        if id(leaf) not in copy_ids and id(leaf) not in known:
            parents.append(leaf)
            known.add(id(leaf))
    refs = [weakref.ref(node) for node in nodes]
    segment.parents = parents
    segment.wanted = wanted
    segment.shapes = [t._array.shape for t in outputs]
    hub = _CheckpointHub(len(wanted), segment.backward)
    hub.parents = tuple(node_of(t) for t in parents)
    hub.needs_input_grad = (True,) * len(parents)
    # As a saved tensor's: changing an argument in place before backward is an error.
    hub.saved_versions = tuple((t._version, t._version[0]) for t in inputs)
    routed = route(hub, outputs, _CheckpointTap)
    for i, r in zip(wanted, routed):
        flat_out[i] = r
    del out, outputs, leaves, nodes, copies
    # The first run's graph is gone now; nodes still alive are older than the segment (a
    # closure's non-leaf) or kept by something else: the recomputation must not reach them.
    segment.foreign = {id(n): ref for ref in refs if (n := ref()) is not None}
    return _unflatten(segment.out_spec, iter(flat_out))


def checkpoint_sequential(
    functions: Any,
    segments: int,
    input: Any,
    use_reentrant: bool | None = None,
    **kwargs: Any,
) -> Any:
    """Run a ``Sequential`` (or a list of modules/functions) in ``segments`` chunks, every
    chunk but the last checkpointed (as ``torch.utils.checkpoint.checkpoint_sequential``).

    Args:
        functions: an ``nn.Sequential`` or a list of callables, applied in order.
        segments: how many chunks.
        input: the first chunk's input.
        use_reentrant: accepted, as in ``checkpoint``.
        **kwargs: ``preserve_rng_state`` only.

    Raises:
        ValueError: an unexpected keyword argument.
    """
    preserve = kwargs.pop("preserve_rng_state", True)
    if kwargs:
        raise ValueError(f"checkpoint_sequential: unexpected keyword arguments {sorted(kwargs)}")
    if hasattr(functions, "children") and not isinstance(functions, (list, tuple)):
        functions = list(functions.children())
    functions = list(functions)

    def run(start: int, end: int) -> Callable[[Any], Any]:
        def forward(x: Any) -> Any:
            for j in range(start, end + 1):
                x = functions[j](x)
            return x

        return forward

    size = len(functions) // segments
    end = -1
    for start in range(0, size * (segments - 1), size):
        end = start + size - 1
        input = checkpoint(
            run(start, end), input, use_reentrant=use_reentrant, preserve_rng_state=preserve
        )
    return run(end + 1, len(functions) - 1)(input)


__all__ = ["checkpoint", "checkpoint_sequential"]
