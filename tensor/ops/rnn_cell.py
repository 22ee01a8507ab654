"""One recurrent step as one op: the hidden-state product, the gates' nonlinearities and
the state update of an LSTM, GRU or Elman RNN, with the backward written out beside them.

Composed from separate ops, an LSTM step is about fifteen autograd nodes (product, add,
chunk, three sigmoids, two tanhs, products and sums); here it is one node, with fewer
allocations (the CPU gain). On a GPU the gate math is still several elementwise launches
per step, as many as the composed ops take. The input's projection ``x W_ihᵀ + b_ih`` is
computed for every time step at once by the caller; a step reads its rows ``start:stop``
of that array and hands back their gradient as ``SliceGrads``, so the steps' pieces are
placed into one gradient array without a slicing node per step. numpy or cupy through
``get_array_module``.
"""

from __future__ import annotations

from typing import Any

from dtrain._tensor.amp.cast import autocast_inputs
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.autograd.slice_grads import SliceGrads
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.linalg import matmul


def _rows(projected: Any, start: int, stop: int) -> Any:
    return projected if start == 0 and stop == projected.shape[0] else projected[start:stop]


def _rows_grad(shape: tuple, start: int, stop: int, grad: Any) -> Any:
    """The gradient of the whole projection from that of its rows ``start:stop``."""
    if start == 0 and stop == shape[0]:
        return grad
    return SliceGrads(shape, (slice(start, stop),), grad)


def _sigmoid_(x: Any, xp: Any) -> None:
    """``x ← sigmoid(x)`` in place, in the tanh form (no overflow for large ``|x|``)."""
    x *= 0.5
    xp.tanh(x, out=x)
    x *= 0.5
    x += 0.5


class LSTMStep(Op):
    """``state = [h | c]`` (N, P + H) → ``[h' | c']`` (N, 2H) with gates
    ``i, f, g, o = projected[start:stop] + h W_hhᵀ`` (b_hh already in ``projected``);
    ``h'`` is before any projection by ``weight_hr``."""

    reads_inputs = True

    def forward(self, projected: Any, state: Any, weight_hh: Any, start: int, stop: int) -> Any:
        xp = get_array_module(state)
        hidden = weight_hh.shape[0] // 4
        size = weight_hh.shape[1]
        h, c = state[:, :size], state[:, size:]
        gates = matmul(h, weight_hh.T)
        gates += _rows(projected, start, stop)
        _sigmoid_(gates[:, : 2 * hidden], xp)
        _sigmoid_(gates[:, 3 * hidden :], xp)
        g = gates[:, 2 * hidden : 3 * hidden]
        xp.tanh(g, out=g)
        i, f, o = gates[:, :hidden], gates[:, hidden : 2 * hidden], gates[:, 3 * hidden :]
        out = xp.empty((state.shape[0], 2 * hidden), dtype=gates.dtype)
        new_c = out[:, hidden:]
        xp.multiply(f, c, out=new_c)
        new_c += i * g
        tanh_c = xp.tanh(new_c)
        xp.multiply(o, tanh_c, out=out[:, :hidden])
        self.shape, self.start, self.stop = projected.shape, start, stop
        self.gates, self.tanh_c, self.h, self.c, self.weight_hh = gates, tanh_c, h, c, weight_hh
        return out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        gates, tanh_c, c = self.gates, self.tanh_c, self.c
        hidden = tanh_c.shape[1]
        i, f = gates[:, :hidden], gates[:, hidden : 2 * hidden]
        g, o = gates[:, 2 * hidden : 3 * hidden], gates[:, 3 * hidden :]
        grad_h, grad_c = grad[:, :hidden], grad[:, hidden:]
        grad_c = grad_c + grad_h * o * (1 - tanh_c * tanh_c)
        d = xp.empty_like(gates)  # the gradient of the gates before their nonlinearities
        xp.multiply(grad_c * g, i * (1 - i), out=d[:, :hidden])
        xp.multiply(grad_c * c, f * (1 - f), out=d[:, hidden : 2 * hidden])
        xp.multiply(grad_c * i, 1 - g * g, out=d[:, 2 * hidden : 3 * hidden])
        xp.multiply(grad_h * tanh_c, o * (1 - o), out=d[:, 3 * hidden :])
        need_projected, need_state, need_weight = self.needs_input_grad[:3]
        grad_state = grad_weight = None
        if need_state:
            grad_state = xp.concatenate([matmul(d, self.weight_hh), grad_c * f], axis=1)
        if need_weight:
            grad_weight = matmul(d.T, self.h)
        grad_projected = (
            _rows_grad(self.shape, self.start, self.stop, d) if need_projected else None
        )
        return grad_projected, grad_state, grad_weight


class GRUStep(Op):
    """``h`` (N, H) → ``h' = n + z (h - n)`` with ``r, z = σ(p_rz + (h W_hhᵀ + b_hh)_rz)``
    and ``n = tanh(p_n + r (h W_hnᵀ + b_hn))``, ``p = projected[start:stop]``."""

    reads_inputs = True

    def forward(
        self, projected: Any, h: Any, weight_hh: Any, bias_hh: Any, start: int, stop: int
    ) -> Any:
        xp = get_array_module(h)
        hidden = h.shape[1]
        p = _rows(projected, start, stop)
        gh = matmul(h, weight_hh.T)
        if bias_hh is not None:
            gh += bias_hh
        rz = p[:, : 2 * hidden] + gh[:, : 2 * hidden]
        _sigmoid_(rz, xp)
        r, z = rz[:, :hidden], rz[:, hidden:]
        gh_n = gh[:, 2 * hidden :]
        n = r * gh_n
        n += p[:, 2 * hidden :]
        xp.tanh(n, out=n)
        out = h - n
        out *= z
        out += n
        self.shape, self.start, self.stop = projected.shape, start, stop
        self.rz, self.n, self.gh_n, self.h, self.weight_hh = rz, n, gh_n, h, weight_hh
        return out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        rz, n, gh_n, h = self.rz, self.n, self.gh_n, self.h
        hidden = n.shape[1]
        r, z = rz[:, :hidden], rz[:, hidden:]
        d_in = xp.empty((grad.shape[0], 3 * hidden), dtype=grad.dtype)  # of projected's rows
        d_n = d_in[:, 2 * hidden :]
        xp.multiply(grad * (1 - z), 1 - n * n, out=d_n)
        xp.multiply(d_n * gh_n, r * (1 - r), out=d_in[:, :hidden])
        xp.multiply(grad * (h - n), z * (1 - z), out=d_in[:, hidden : 2 * hidden])
        d_hh = d_in.copy()  # of h W_hhᵀ + b_hh: the n part goes through r
        d_hh[:, 2 * hidden :] *= r
        need_projected, need_h, need_weight = self.needs_input_grad[:3]
        need_bias = len(self.needs_input_grad) > 3 and self.needs_input_grad[3]
        grad_h = grad_weight = grad_bias = None
        if need_h:
            grad_h = matmul(d_hh, self.weight_hh)
            grad_h += grad * z
        if need_weight:
            grad_weight = matmul(d_hh.T, h)
        if need_bias:
            grad_bias = d_hh.sum(axis=0)
        grad_projected = (
            _rows_grad(self.shape, self.start, self.stop, d_in) if need_projected else None
        )
        return grad_projected, grad_h, grad_weight, grad_bias


class RNNStep(Op):
    """``h`` (N, H) → ``act(projected[start:stop] + h W_hhᵀ + b_hh)``, act tanh or relu."""

    reads_inputs = True
    reads_output = True

    def forward(
        self,
        projected: Any,
        h: Any,
        weight_hh: Any,
        bias_hh: Any,
        start: int,
        stop: int,
        relu: bool,
    ) -> Any:
        xp = get_array_module(h)
        out = matmul(h, weight_hh.T)
        out += _rows(projected, start, stop)
        if bias_hh is not None:
            out += bias_hh
        if relu:
            xp.maximum(out, 0, out=out)
        else:
            xp.tanh(out, out=out)
        self.shape, self.start, self.stop, self.relu = projected.shape, start, stop, relu
        self.out, self.h, self.weight_hh = out, h, weight_hh
        return out

    def backward(self, grad: Any) -> tuple:
        out = self.out
        d = grad * (out > 0) if self.relu else grad * (1 - out * out)
        need_projected, need_h, need_weight = self.needs_input_grad[:3]
        need_bias = len(self.needs_input_grad) > 3 and self.needs_input_grad[3]
        grad_h = matmul(d, self.weight_hh) if need_h else None
        grad_weight = matmul(d.T, self.h) if need_weight else None
        grad_bias = d.sum(axis=0) if need_bias else None
        grad_projected = (
            _rows_grad(self.shape, self.start, self.stop, d) if need_projected else None
        )
        return grad_projected, grad_h, grad_weight, grad_bias


def _check(where: str, projected: Tensor, state: Tensor, start: int, stop: int) -> None:
    if not 0 <= start <= stop <= projected.shape[0] or state.shape[0] != stop - start:
        raise ValueError(
            f"{where}: rows {start}:{stop} of a projection of {projected.shape[0]} rows do not "
            f"match a state of {state.shape[0]} rows; give 0 <= start <= stop <= "
            f"{projected.shape[0]} and stop - start == state rows"
        )


def _check_dtypes(where: str, projected: Tensor, state: Tensor, weight_hh: Tensor) -> None:
    """Refuse operands of mixed dtypes (after autocast's casts): the products would promote
    the whole recurrence (PyTorch raises too)."""
    if state.dtype != weight_hh.dtype:
        raise RuntimeError(
            f"{where}: the hidden state's dtype {state.dtype} does not match the weight "
            f"dtype {weight_hh.dtype}; convert the state (hx.to({weight_hh.dtype}))"
        )
    if projected.dtype != weight_hh.dtype:
        raise RuntimeError(
            f"{where}: the input projection's dtype {projected.dtype} does not match the "
            f"weight dtype {weight_hh.dtype}; convert the input (x.to({weight_hh.dtype}))"
        )


def lstm_step(
    projected: Tensor, state: Tensor, weight_hh: Tensor, start: int = 0, stop: int | None = None
) -> Tensor:
    """One LSTM step (gates ``i, f, g, o`` as PyTorch) as one op.

    Args:
        projected: (L·N, 4H) ``x W_ihᵀ + b_ih + b_hh`` for every step (the caller folds
            ``b_hh`` into the product's bias, so under autocast it is cast once, not per
            step); rows ``start:stop`` are this step's.
        state: (N, P + H) the previous ``[h | c]`` (P = proj_size or H).
        weight_hh: (4H, P).

    Returns:
        (N, 2H) ``[h' | c']``, ``h'`` before any ``weight_hr`` projection.
    """
    stop = projected.shape[0] if stop is None else stop
    _check("lstm_step", projected, state, start, stop)
    projected, state, weight_hh = autocast_inputs("lower", projected, state, weight_hh)
    _check_dtypes("lstm_step", projected, state, weight_hh)
    return LSTMStep.apply(projected, state, weight_hh, start=start, stop=stop)


def gru_step(
    projected: Tensor,
    h: Tensor,
    weight_hh: Tensor,
    bias_hh: Tensor | None,
    start: int = 0,
    stop: int | None = None,
) -> Tensor:
    """One GRU step (gates ``r, z, n`` as PyTorch, ``b_hn`` inside ``r * (...)``) as one op,
    from rows ``start:stop`` of ``projected = x W_ihᵀ + b_ih`` (L·N, 3H); ``h`` (N, H)."""
    stop = projected.shape[0] if stop is None else stop
    _check("gru_step", projected, h, start, stop)
    projected, h, weight_hh, bias_hh = autocast_inputs("lower", projected, h, weight_hh, bias_hh)
    _check_dtypes("gru_step", projected, h, weight_hh)
    return GRUStep.apply(projected, h, weight_hh, bias_hh, start=start, stop=stop)


def rnn_step(
    projected: Tensor,
    h: Tensor,
    weight_hh: Tensor,
    bias_hh: Tensor | None,
    relu: bool = False,
    start: int = 0,
    stop: int | None = None,
) -> Tensor:
    """One Elman step ``tanh(p + h W_hhᵀ + b_hh)`` (``relu`` instead with ``relu=True``) as
    one op, from rows ``start:stop`` of ``projected = x W_ihᵀ + b_ih`` (L·N, H)."""
    stop = projected.shape[0] if stop is None else stop
    _check("rnn_step", projected, h, start, stop)
    projected, h, weight_hh, bias_hh = autocast_inputs("lower", projected, h, weight_hh, bias_hh)
    _check_dtypes("rnn_step", projected, h, weight_hh)
    return RNNStep.apply(projected, h, weight_hh, bias_hh, start=start, stop=stop, relu=relu)
