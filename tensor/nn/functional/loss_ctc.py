"""``ctc_loss``: the connectionist temporal classification loss, in log space.

The targets are extended with blanks (``b l1 b l2 … b``, ``2S + 1`` positions); the forward
variables ``alpha`` and the backward variables ``beta`` are computed for the whole batch and
every extended position at once, one vectorised step per time step (the only Python loop).
The gradient is PyTorch's: ``exp(log_probs) - Σ_s exp(alpha + beta + nll - log_probs)``
summed over the positions ``s`` that carry each class (a scatter-add), zero past each
sequence's input length.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import add_at, quiet
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.device import as_numpy
from dtrain.runtime.value_checks import may_check_values

REDUCTIONS = ("none", "mean", "sum")


def _logsumexp(*terms: Any) -> Any:
    """Elementwise log(Σ exp(term)) that stays -inf when every term is -inf."""
    xp = get_array_module(terms[0])
    top = terms[0]
    for t in terms[1:]:
        top = xp.maximum(top, t)
    shift = xp.where(xp.isfinite(top), top, xp.zeros((), dtype=top.dtype))
    total = xp.exp(terms[0] - shift)
    for t in terms[1:]:
        total = total + xp.exp(t - shift)
    return xp.log(total) + shift


class CTCLoss(Op):
    """Per-sequence negative log-likelihoods ``(N,)`` of ``(T, N, C)`` log-probabilities."""

    def forward(
        self,
        log_probs: Any,
        labels: Any,
        skip: Any,
        input_lengths: Any,
        target_lengths: Any,
        zero_infinity: bool,
    ) -> Any:
        xp = get_array_module(log_probs)
        steps, batch, _ = log_probs.shape
        positions = labels.shape[1]
        # log_probs of each extended label: (T, N, 2S + 1)
        picked = xp.take_along_axis(log_probs, xp.broadcast_to(labels, (steps,) + labels.shape), 2)
        lowest = xp.asarray(-np.inf, dtype=log_probs.dtype)
        edge = xp.full((batch, 1), -np.inf, dtype=log_probs.dtype)
        edge2 = xp.full((batch, 2), -np.inf, dtype=log_probs.dtype)
        start = xp.arange(positions) < 2
        alpha = xp.empty_like(picked)
        with quiet(xp):
            alpha[0] = xp.where(start, picked[0], lowest)
            for t in range(1, steps):
                previous = alpha[t - 1]
                # shifted right by one and two positions (sliced: 2S + 1 may be 1)
                one = xp.concatenate([edge, previous], axis=1)[:, :positions]
                two = xp.concatenate([edge2, previous], axis=1)[:, :positions]
                two = xp.where(skip, two, lowest)
                alpha[t] = picked[t] + _logsumexp(previous, one, two)
            rows = xp.arange(batch)
            # (N, 2S + 1) at each sequence's last step
            last = alpha[xp.maximum(input_lengths - 1, 0), rows]
            end = 2 * target_lengths
            final = last[rows, end]
            before = xp.where(end > 0, last[rows, xp.maximum(end - 1, 0)], lowest)
            nll = -_logsumexp(final, before)
            # no input: nothing to emit, so an empty target costs 0 and any other is impossible
            empty = xp.where(end == 0, xp.zeros((), nll.dtype), xp.asarray(np.inf, nll.dtype))
            nll = xp.where(input_lengths == 0, empty, nll)
        self.saved = (log_probs, labels, skip, picked, alpha, input_lengths, target_lengths, nll)
        self.zeroed = xp.isinf(nll) if zero_infinity else None
        if zero_infinity:
            return xp.where(self.zeroed, xp.zeros((), dtype=nll.dtype), nll)
        return nll

    def backward(self, grad: Any) -> tuple:
        log_probs, labels, skip, picked, alpha, input_lengths, target_lengths, nll = self.saved
        xp = get_array_module(grad)
        steps, batch, classes = log_probs.shape
        positions = labels.shape[1]
        lowest = xp.asarray(-np.inf, dtype=log_probs.dtype)
        edge = xp.full((batch, 1), -np.inf, dtype=log_probs.dtype)
        edge2 = xp.full((batch, 2), -np.inf, dtype=log_probs.dtype)
        index = xp.arange(positions)
        end = (2 * target_lengths)[:, None]
        ends = (index == end) | (index == end - 1)  # where beta starts, at each last step
        # a skip into s + 2 is allowed where a skip from s into s + 2 is
        skip_ahead = xp.concatenate([skip, xp.zeros((batch, 2), dtype=bool)], axis=1)[:, 2:]
        occupancy = xp.zeros(steps * batch * classes, dtype=log_probs.dtype)
        flat_labels = (xp.arange(batch)[:, None] * classes + labels).reshape(1, -1)
        flat_labels = flat_labels + (xp.arange(steps) * batch * classes)[:, None]
        beta = xp.full((batch, positions), -np.inf, dtype=log_probs.dtype)
        weights = xp.empty_like(picked)
        with quiet(xp):
            for t in range(steps - 1, -1, -1):
                one = xp.concatenate([beta, edge], axis=1)[:, 1:]
                two = xp.where(skip_ahead, xp.concatenate([beta, edge2], axis=1)[:, 2:], lowest)
                step = picked[t] + _logsumexp(beta, one, two)
                is_last = (input_lengths - 1 == t)[:, None]
                beta = xp.where(is_last, xp.where(ends, picked[t], lowest), step)
                beta = xp.where((input_lengths - 1 >= t)[:, None], beta, lowest)
                # alpha · beta / y_t over the likelihood: each position's occupancy (<= 1)
                weights[t] = xp.exp(alpha[t] + beta - picked[t] + nll[:, None])
        add_at(occupancy, flat_labels.reshape(-1), weights.reshape(-1), "ctc_loss backward")
        occupancy = occupancy.reshape(steps, batch, classes)
        active = (xp.arange(steps)[:, None] < input_lengths[None, :])[:, :, None]
        with quiet(xp):
            gradient = xp.where(active, xp.exp(log_probs) - occupancy, 0)
        scale = grad if self.zeroed is None else xp.where(self.zeroed, 0, grad)
        if self.zeroed is not None:  # an impossible alignment's NaN gradient becomes zero
            gradient = xp.where(self.zeroed[None, :, None], 0, gradient)
        return (gradient * scale[None, :, None],)


def _lengths(where: str, name: str, value: Any, batch: int) -> np.ndarray:
    """Lengths (a tensor, array, list or int) as a host int64 array of ``batch`` entries."""
    array = value._array if isinstance(value, Tensor) else value
    array = np.asarray(as_numpy(array) if hasattr(array, "shape") else array)
    if array.dtype.kind not in "iu" or array.size != batch:
        raise ValueError(
            f"{where}: {name} must hold {batch} integer length(s), one per sequence, got "
            f"{array.tolist()!r}"
        )
    return array.reshape(batch).astype(np.int64)


def ctc_loss(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths: Any,
    target_lengths: Any,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> Tensor:
    """The connectionist temporal classification loss, as PyTorch's ``ctc_loss``.

    Args:
        log_probs: ``(T, N, C)`` (or unbatched ``(T, C)``) float32 or float64
            log-probabilities, e.g. the output of ``log_softmax(dim=2)``.
        targets: ``(N, S)`` padded targets, or all targets concatenated in one 1-D tensor
            of ``sum(target_lengths)``; they must not contain ``blank``.
        input_lengths: each sequence's length, ``<= T`` (a tensor, a list or an int); a
            length of 0 gives a loss of 0 with an empty target and inf otherwise.
        target_lengths: each target's length (a tensor, a list or an int).
        blank: the blank class.
        reduction: ``"mean"`` (each loss divided by its target length, then the batch mean),
            ``"sum"`` or ``"none"`` (``(N,)``).
        zero_infinity: give impossible alignments a loss (and gradient) of zero instead of
            inf.

    Returns:
        The loss.

    Raises:
        TypeError: float16 or integer ``log_probs`` (as PyTorch), or non-integer targets.
        ValueError: bad shapes, lengths or reduction.

    The lengths are read on the host (PyTorch copies them there too). As PyTorch's, the
    gradient assumes ``log_probs`` are normalised (it includes ``exp(log_probs)``, which
    ``log_softmax``'s backward cancels).
    """
    where = "ctc_loss"
    if not isinstance(log_probs, Tensor) or not isinstance(targets, Tensor):
        raise TypeError(f"{where}: log_probs and targets must be Tensors")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{where}: reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    if log_probs._array.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"{where}: log_probs must be float32 or float64, got {log_probs.dtype} (PyTorch "
            "refuses float16 too); convert them with .float()"
        )
    if targets._array.dtype.kind not in "iu":
        raise TypeError(f"{where}: targets must be integer classes, got {targets.dtype}")
    unbatched = log_probs.ndim == 2
    if unbatched:
        log_probs = log_probs.unsqueeze(1)
        if targets.ndim != 1:
            raise ValueError(
                f"{where}: unbatched (T, C) log_probs take 1-D targets, got shape "
                f"{tuple(targets.shape)}"
            )
    if log_probs.ndim != 3:
        raise ValueError(
            f"{where}: log_probs must be (T, N, C) or (T, C), got {tuple(log_probs.shape)}"
        )
    steps, batch, classes = log_probs.shape
    if not 0 <= blank < classes:
        raise ValueError(f"{where}: blank {blank} must be a class in [0, {classes})")
    inputs = _lengths(where, "input_lengths", input_lengths, batch)
    lengths = _lengths(where, "target_lengths", target_lengths, batch)
    if inputs.min(initial=0) < 0 or inputs.max(initial=0) > steps:
        raise ValueError(
            f"{where}: input_lengths {inputs.tolist()} must lie in [0, {steps}] (T of log_probs)"
        )
    if lengths.min(initial=0) < 0:
        raise ValueError(f"{where}: target_lengths {lengths.tolist()} must not be negative")
    xp = get_array_module(log_probs._array)
    labels = targets._array
    longest = int(lengths.max(initial=0))
    if unbatched or targets.ndim == 2:
        labels = labels.reshape(batch, -1)
        if labels.shape[1] < longest:
            raise ValueError(
                f"{where}: targets of shape {tuple(targets.shape)} are shorter than the "
                f"longest target length {longest}"
            )
        labels = labels[:, :longest]
    elif targets.ndim == 1:
        if labels.shape[0] != int(lengths.sum()):
            raise ValueError(
                f"{where}: concatenated targets hold {labels.shape[0]} classes but "
                f"target_lengths sum to {int(lengths.sum())}"
            )
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        take = np.minimum(starts[:, None] + np.arange(longest), max(labels.shape[0] - 1, 0))
        labels = labels[xp.asarray(take)] if labels.shape[0] else xp.zeros((batch, 0), np.int64)
    else:
        raise ValueError(f"{where}: targets must be 1-D or 2-D, got {tuple(targets.shape)}")
    # Padding beyond each target's length: any valid class (never reached by the recursion).
    inside = xp.asarray(np.arange(longest)[None, :] < lengths[:, None])
    labels = xp.where(inside, labels, blank).astype(np.int64)
    if labels.size and may_check_values(labels) and (labels.min() < 0 or labels.max() >= classes):
        bad = int(labels.min() if labels.min() < 0 else labels.max())
        raise ValueError(f"{where}: target class {bad} is outside [0, {classes})")
    extended = xp.full((batch, 2 * longest + 1), blank, dtype=np.int64)
    extended[:, 1::2] = labels
    skip = xp.zeros(extended.shape, dtype=bool)
    skip[:, 3::2] = labels[:, 1:] != labels[:, :-1]  # l_s may follow l_{s-2} directly
    nll = CTCLoss.apply(
        log_probs,
        labels=extended,
        skip=skip,
        input_lengths=xp.asarray(inputs),
        target_lengths=xp.asarray(lengths),
        zero_infinity=bool(zero_infinity),
    )
    if reduction == "none":
        return nll.squeeze(0) if unbatched else nll
    if reduction == "sum":
        return nll.sum()
    divisor = xp.asarray(np.maximum(lengths, 1).astype(nll._array.dtype))
    return (nll / wrap(divisor)).mean()


__all__ = ["ctc_loss"]
