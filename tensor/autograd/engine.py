"""Reverse-mode differentiation: walk the graph from the outputs to the leaves.

The walk is iterative (Kahn's algorithm over dependency counts), so graphs of any depth
backpropagate without touching Python's recursion limit. Each node runs once, with the sum
of the gradients of all its consumers; each leaf accumulates once per backward, and then
its post-accumulate hooks fire (DDP starts its all-reduce from them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.autograd.slice_grads import SliceGrads, add_grads
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import device_id, get_array_module, is_cuda_array, may_share_memory
from dtrain.runtime.cuda_graph import is_current_stream_capturing


class _Callbacks(threading.local):
    depth = 0
    pending: list | None = None


_callbacks = _Callbacks()


def queue_callback(callback: Callable[[], None]) -> None:
    """Run ``callback`` once the backward pass now running has finished (PyTorch's
    ``Variable._execution_engine.queue_callback``; DDP waits for its all-reduces there)."""
    if _callbacks.depth == 0:
        raise RuntimeError("queue_callback is only valid while a backward pass is running")
    _callbacks.pending.append(callback)


_shared_ones: dict = {}  # (device, dtype, shape) -> backward's implicit 1 on that GPU


def implicit_one(array: Any) -> Any:
    """The gradient 1 that ``backward()`` starts from for a one-element output ``array``.
    On CUDA a fresh one is a fill launch per step, so each device, dtype and shape keeps
    one: the engine never writes into a root's gradient (it counts as borrowed), and hooks
    and a user's ``Function`` get a copy of it (``private_grad``). None is kept while a CUDA
    graph is being captured: memory allocated then belongs to the graph's pool."""
    if not is_cuda_array(array):
        return np.ones_like(array)
    key = (device_id(array), array.dtype, array.shape)
    one = _shared_ones.get(key)
    if one is None:
        one = get_array_module(array).ones_like(array)
        if not is_current_stream_capturing():
            _shared_ones[key] = one
    return one


def private_grad(grad: Any) -> Any:
    """``grad``, or a copy of it where it is (a view of) a shared implicit one: for code
    that might write into what it is given (hooks, a user's ``Function.backward``)."""
    if _shared_ones and is_cuda_array(grad):
        memory = grad.data.mem
        for one in _shared_ones.values():
            if one.data.mem is memory:
                return grad.copy()
    return grad


def run_backward(
    roots: Sequence[Tensor],
    root_grads: Sequence[Any],
    retain_graph: bool = False,
    capture: Sequence[Tensor] | None = None,
) -> list | None:
    """Backpropagate ``root_grads`` from ``roots``, then run the queued callbacks.

    With ``capture`` (``autograd.grad``), return the gradient reaching each captured tensor
    instead of accumulating into any leaf's ``.grad``.
    """
    if _callbacks.depth == 0:
        _callbacks.pending = []
    _callbacks.depth += 1
    try:
        result = _walk(roots, root_grads, retain_graph, capture)
    finally:
        _callbacks.depth -= 1
    if _callbacks.depth == 0:
        pending, _callbacks.pending = _callbacks.pending, None
        for callback in pending:
            callback()
    return result


def _walk(
    roots: Sequence[Tensor],
    root_grads: Sequence[Any],
    retain_graph: bool,
    capture: Sequence[Tensor] | None,
) -> list | None:
    pending = _count_dependencies(roots)
    grads: dict = {}
    borrowed: set = set()  # ids of nodes whose gradient array another holder may share
    ready = []
    for root, grad in zip(roots, root_grads):
        node = root if root.grad_fn is None else root.grad_fn
        if node in grads:
            grads[node] = add_grads(grads[node], grad)
            borrowed.discard(id(node))
        else:
            grads[node] = grad
            borrowed.add(id(node))
        pending[node] -= 1
        if pending[node] == 0:
            ready.append(node)

    captured = None
    capture_keys: dict = {}
    if capture is not None:
        captured = [None] * len(capture)
        for index, tensor in enumerate(capture):
            capture_keys.setdefault(
                tensor if tensor.grad_fn is None else tensor.grad_fn, []
            ).append(index)

    while ready:
        node = ready.pop()
        grad = grads.pop(node, None)
        if type(grad) is SliceGrads:  # densify(), inlined: this loop runs once per node
            grad = grad.dense()
        if type(node) is not Tensor and not isinstance(node, Tensor):
            hooked = grad is not None and bool(node.tensor_hooks)
            if hooked:
                grad = _run_tensor_hooks(node.tensor_hooks, grad)
            if captured is not None and node in capture_keys:
                for index in capture_keys[node]:
                    captured[index] = grad
            if node.freed:
                raise RuntimeError(
                    f"backward through {node.name()} a second time: its saved values were "
                    "freed by the first backward. Pass retain_graph=True to the first "
                    "backward() (or autograd.grad) if you need to backpropagate twice"
                )
            in_grads = None
            added = offered = ()
            parents = node.parents
            if grad is not None:
                if node.saved_versions:
                    _check_versions(node)
                if node.adds_pending and grads:
                    offered = _already_sent(parents, grads, borrowed)
                    in_grads, added = node.backward_adding(grad, offered)
                else:
                    in_grads = node.backward(grad)
            # a user's hook or autograd.grad's results may hold the incoming gradient
            held = hooked or captured is not None or id(node) in borrowed
            if not retain_graph:
                node.release()
            for index, parent in enumerate(parents):
                if parent is None:
                    continue
                if in_grads is not None:
                    in_grad = in_grads[index]
                    if in_grad is not None:
                        if type(in_grad) is SliceGrads:  # a view of the incoming gradient
                            in_grad.owned = not held and _sole_holder(grad, in_grads)
                        if added and added[index] and offered[index] is not None:  # added
                            if in_grad is not grads[parent]:  # not in place: whose is it?
                                if _shares_memory(in_grad, grad):
                                    borrowed.add(id(parent))
                                else:
                                    borrowed.discard(id(parent))
                            grads[parent] = in_grad
                        elif parent in grads:
                            grads[parent] = add_grads(grads[parent], in_grad)
                            borrowed.discard(id(parent))
                        else:
                            grads[parent] = in_grad
                            if type(in_grad) is not SliceGrads and not (
                                node.returns_own_grads  # a user's Function may keep them
                                and _input_owns(in_grad, grad, in_grads, held, parent)
                            ):
                                borrowed.add(id(parent))
                pending[parent] -= 1
                if pending[parent] == 0:
                    ready.append(parent)
        elif grad is not None:
            if captured is not None:
                for index in capture_keys.get(node, ()):
                    captured[index] = grad
            else:
                _accumulate(node, grad, id(node) in borrowed)
    return captured


def _already_sent(parents: tuple, grads: dict, borrowed: set) -> tuple:
    """Per input of a node: ``(gradient, owned)`` already sent to it by other consumers, or
    None (none yet, a sparse one, or an input the node lists twice after its first time)."""
    pending = []
    seen = set()
    for parent in parents:
        found = None if parent is None or id(parent) in seen else grads.get(parent)
        if found is not None and type(found) is not SliceGrads:
            pending.append((found, id(parent) not in borrowed))
        else:
            pending.append(None)
        seen.add(id(parent))
    return tuple(pending)


def _input_owns(in_grad: Any, grad: Any, in_grads: tuple, held: bool, parent: Any) -> bool:
    """Whether the input (``parent``) a backward sent ``in_grad`` to may keep it and write
    into it, the backward having received ``grad`` (``held``: someone besides the engine may
    hold that). Never a broadcast view (sum's backward; its elements overlap, and numpy's
    are read-only), and for a leaf only a C-contiguous array (its .grad, which the fused
    optimizer kernels take). Otherwise a new array, or a view of one, is the input's; the
    incoming gradient, or a view of it, is the input's when it alone got it and no one else
    holds it."""
    if 0 in in_grad.strides or (isinstance(in_grad, np.ndarray) and not in_grad.flags.writeable):
        return False
    if isinstance(parent, Tensor) and not in_grad.flags.c_contiguous:
        return False
    if in_grad is not grad and (in_grad.base is None or not may_share_memory(in_grad, grad)):
        return True  # new
    return not held and _sole_holder(grad, in_grads)


def _sole_holder(grad: Any, in_grads: tuple) -> bool:
    """Whether a backward passed its incoming gradient, or views of it, to one input only:
    as it came (a pass-through, such as a cast to the dtype it already has), as a view
    (``reshape``, ``transpose``) or as a piece (basic indexing). When the engine alone held
    it, that input then owns it too: a leaf keeps it as its .grad without a copy, and split
    pieces that are views of one array are that array's gradient as they lie
    (``SliceGrads.dense``). Passed to two inputs, neither may write into it."""
    holders = 0
    for in_grad in in_grads:
        if in_grad is not None and (
            in_grad is grad or type(in_grad) is SliceGrads or _shares_memory(in_grad, grad)
        ):
            holders += 1
            if holders > 1:  # (cat's backward hands out hundreds of views: stop early)
                return False
    return holders == 1


def _shares_memory(out: Any, incoming: Any) -> bool:
    """True when a backward passed (a view of) its incoming gradient on: that array may be
    held by other consumers, so a leaf must copy it. Views of arrays a backward computed
    afresh are its own and are kept without a copy."""
    if out.base is None:
        return False
    return may_share_memory(out, incoming)


def _count_dependencies(roots: Sequence[Tensor]) -> dict:
    """For every node reachable from ``roots``: how many gradients it will receive."""
    pending: dict = {}
    stack = []
    for root in roots:
        node = root if root.grad_fn is None else root.grad_fn
        if node not in pending:
            pending[node] = 0
            stack.append(node)
        pending[node] += 1
    while stack:
        node = stack.pop()
        if isinstance(node, Tensor):
            continue
        for parent in node.parents:
            if parent is None:
                continue
            if parent in pending:
                pending[parent] += 1
            else:
                pending[parent] = 1
                stack.append(parent)
    return pending


def _check_versions(node: Any) -> None:
    for counter, version in node.saved_versions:
        if counter[0] != version:
            raise RuntimeError(
                f"one of the tensors {node.name()} needs for its gradient was modified by an "
                f"in-place operation (its version is {counter[0]}, expected {version}). "
                "Use the out-of-place form (x = x + y rather than x.add_(y)), or .clone() the "
                "tensor before changing it"
            )


def _run_tensor_hooks(hooks: list, grad: Any) -> Any:
    grad = np.asarray(grad) if isinstance(grad, np.generic) else private_grad(grad)
    with no_grad():
        for hook in hooks:
            result = hook(wrap(grad))
            if result is not None:
                grad = result._array if isinstance(result, Tensor) else result
    return grad


def _accumulate(leaf: Tensor, grad: Any, borrowed: bool) -> None:
    if isinstance(grad, np.generic):  # numpy's ops on 0-d arrays give scalars: no in-place
        grad, borrowed = np.asarray(grad), False
    hooks = leaf._hooks
    if hooks is not None and hooks.get("grad"):
        grad = _run_tensor_hooks(hooks["grad"], grad)
        borrowed = True
    array = leaf._array
    if grad.dtype != array.dtype:
        grad = grad.astype(array.dtype)
        borrowed = False
    if grad.shape != array.shape:
        raise RuntimeError(
            f"internal error: gradient of shape {grad.shape} for a leaf of shape "
            f"{array.shape}; please report it with the script that triggers it"
        )
    if leaf.grad is None:
        leaf.grad = wrap(grad.copy() if borrowed else grad)
    else:
        leaf.grad._array += grad
    if hooks is not None and hooks.get("post_accumulate"):
        with no_grad():
            for hook in hooks["post_accumulate"]:
                hook(leaf)
