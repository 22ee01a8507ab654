"""``LBFGS``: limited-memory BFGS, with an optional strong-Wolfe line search."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain._tensor.autograd.grad_mode import enable_grad
from dtrain._tensor.optim.line_search import strong_wolfe
from dtrain._tensor.optim.optimizer import Optimizer, check_lr, copy_array, scalar, zeros_like
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module, is_cuda_array

_LINE_SEARCHES = (None, "strong_wolfe")


def _check_line_search(line_search_fn: Any) -> None:
    if line_search_fn not in _LINE_SEARCHES:
        raise ValueError(
            f"LBFGS: line_search_fn={line_search_fn!r} is not supported; pass "
            "line_search_fn='strong_wolfe' or None (a fixed step of lr)"
        )


def _pack(value: Any) -> Any:
    """A state value as the state dict keeps it: arrays (and array scalars) as tensors."""
    if isinstance(value, list):
        return [_pack(v) for v in value]
    if is_cuda_array(value):
        return wrap(value)
    if isinstance(value, (np.ndarray, np.generic)):
        return wrap(np.asarray(value))
    return value


def _unpack(value: Any) -> Any:
    """A state value as ``step`` works on it: tensors as their arrays."""
    if isinstance(value, list):
        return [_unpack(v) for v in value]
    if isinstance(value, Tensor):
        return value._array
    return value


class LBFGS(Optimizer):
    """L-BFGS, as ``torch.optim.LBFGS`` (after minFunc).

    Each ``step(closure)`` runs up to ``max_iter`` iterations: a direction from the last
    ``history_size`` curvature pairs (the two-loop recursion; plain steepest descent on the
    very first iteration, with step ``min(1, 1 / |g|_1) * lr``), then either a fixed step of
    ``lr`` or a strong-Wolfe line search. It stops early when the gradient's largest entry is
    at most ``tolerance_grad``, when the loss or the step changes by less than
    ``tolerance_change``, or after ``max_eval`` closure calls. The history carries over
    between steps, as PyTorch's does.

    All parameters form one flat vector, so they must share one device; it keeps
    ``history_size + 1`` extra copies of them.

    Args:
        params: tensors (one parameter group only).
        lr: learning rate: a float, or a one-element tensor read at each step.
        max_iter: iterations per ``step``.
        max_eval: closure calls per ``step`` (default ``max_iter * 5 // 4``).
        tolerance_grad: stop when ``max |grad|`` is at most this.
        tolerance_change: stop when the loss or the step changes by less than this.
        history_size: the number of curvature pairs kept.
        line_search_fn: ``"strong_wolfe"`` or None.

    Raises:
        ValueError: ``lr`` is negative, ``line_search_fn`` is neither None nor
            ``"strong_wolfe"``, or the parameters come in more than one group.
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = None,
    ) -> None:
        check_lr(lr)
        _check_line_search(line_search_fn)
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = {
            "lr": lr,
            "max_iter": max_iter,
            "max_eval": max_eval,
            "tolerance_grad": tolerance_grad,
            "tolerance_change": tolerance_change,
            "history_size": history_size,
            "line_search_fn": line_search_fn,
        }
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(
                "LBFGS doesn't support per-parameter options (parameter groups); pass one "
                "list of parameters"
            )
        self._params: list[Tensor] = self.param_groups[0]["params"]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add the one parameter group (LBFGS refuses a second one).

        Raises:
            ValueError: the optimizer has a parameter group already.
        """
        if self.param_groups:
            raise ValueError(
                "LBFGS doesn't support per-parameter options (parameter groups); pass one "
                "list of parameters"
            )
        super().add_param_group(param_group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()``; the history lists' tensors go to the parameters' device."""
        super().load_state_dict(state_dict)
        self._params = self.param_groups[0]["params"]

    def _cast_state(self, param: Tensor, index: Any, name: str, value: Any) -> Any:
        if isinstance(value, list):  # old_dirs, old_stps, ro, al: each element as a tensor
            return [self._cast_state(param, index, name, v) for v in value]
        return super()._cast_state(param, index, name, value)

    # ---- flat views -------------------------------------------------------------------
    def _gather_flat_grad(self) -> Any:
        """A new flat array of every parameter's gradient (zeros where it is None)."""
        first = self._params[0]._array
        xp = get_array_module(first)
        views = []
        for p in self._params:
            array = p._array
            if get_array_module(array) is not xp or (
                is_cuda_array(array) and array.device != first.device
            ):
                raise ValueError(
                    f"LBFGS: parameters on {self._params[0].device} and {p.device}; all "
                    "parameters must be on one device (move the model with .to(device))"
                )
            grad = p.grad
            views.append(zeros_like(array).reshape(-1) if grad is None else grad._array.reshape(-1))
        if is_cuda_array(first):
            with first.device:
                return xp.concatenate(views)
        return xp.concatenate(views)

    def _add_grad(self, step_size: Any, update: Any) -> None:
        """``params += step_size * update``, ``update`` flat."""
        offset = 0
        for p in self._params:
            array = p._array
            n = array.size
            array += step_size * update[offset : offset + n].reshape(array.shape)
            p._version[0] += 1
            offset += n

    def _clone_params(self) -> list[Any]:
        return [copy_array(p._array) for p in self._params]

    def _set_params(self, arrays: list[Any]) -> None:
        for p, array in zip(self._params, arrays):
            p._array[...] = array
            p._version[0] += 1

    def _directional_evaluate(
        self, closure: Callable[[], Any], x: list[Any], t: Any, d: Any
    ) -> tuple[float, Any]:
        """The loss and flat gradient at ``x + t * d``; the parameters go back to ``x``."""
        self._add_grad(t, d)
        with enable_grad():
            loss = float(closure())
        flat_grad = self._gather_flat_grad()
        self._set_params(x)
        return loss, flat_grad

    # ---- the step ---------------------------------------------------------------------
    def step(self, closure: Callable[[], Any]) -> Any:  # type: ignore[override]
        """Run up to ``max_iter`` L-BFGS iterations.

        Args:
            closure: clears the gradients, computes the loss, calls ``backward()`` on it and
                returns it; called with gradients enabled, several times per step.

        Returns:
            The loss of the first ``closure()`` call (before any update), as PyTorch.

        Raises:
            ValueError: the optimizer has more than one parameter group, or an unsupported
                ``line_search_fn``.
        """
        if len(self.param_groups) != 1:
            raise ValueError(
                f"LBFGS expects exactly one parameter group, but has {len(self.param_groups)}"
            )
        group = self.param_groups[0]
        lr = scalar(group["lr"])
        max_iter = group["max_iter"]
        max_eval = group["max_eval"]
        tolerance_grad = group["tolerance_grad"]
        tolerance_change = group["tolerance_change"]
        line_search_fn = group["line_search_fn"]
        history_size = group["history_size"]
        _check_line_search(line_search_fn)

        # All state is global; it sits on the first parameter (so load_state_dict casts it).
        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        with enable_grad():
            orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1

        flat_grad = self._gather_flat_grad()
        xp = get_array_module(flat_grad)
        if xp.abs(flat_grad).max() <= tolerance_grad:
            return orig_loss

        d = _unpack(state.get("d"))
        t = _unpack(state.get("t"))
        old_dirs = _unpack(state.get("old_dirs"))
        old_stps = _unpack(state.get("old_stps"))
        ro = _unpack(state.get("ro"))
        h_diag = _unpack(state.get("H_diag"))
        prev_flat_grad = _unpack(state.get("prev_flat_grad"))
        prev_loss = state.get("prev_loss")
        al = _unpack(state.get("al"))

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1

            # ---- direction
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro = [], [], []
                h_diag = 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = xp.dot(y, s)
                if ys > 1e-10:  # keep only pairs of positive curvature
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    h_diag = ys / xp.dot(y, y)  # the initial inverse Hessian's scale

                # Two-loop recursion: d = -H g, with one work vector.
                num_old = len(old_dirs)
                if al is None:
                    al = [None] * history_size
                q = -flat_grad
                for i in range(num_old - 1, -1, -1):
                    al[i] = xp.dot(old_stps[i], q) * ro[i]
                    q -= al[i] * old_dirs[i]
                d = r = q * h_diag
                for i in range(num_old):
                    be_i = xp.dot(old_dirs[i], r) * ro[i]
                    r += (al[i] - be_i) * old_stps[i]

            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.copy()
            else:
                prev_flat_grad[...] = flat_grad
            prev_loss = loss

            # ---- step length
            first = state["n_iter"] == 1
            t = min(1.0, 1.0 / xp.abs(flat_grad).sum()) * lr if first else lr
            gtd = xp.dot(flat_grad, d)
            if gtd > -tolerance_change:  # not a descent direction (any more)
                break

            ls_func_evals = 0
            if line_search_fn is not None:
                x_init = self._clone_params()

                def obj_func(x: list[Any], step: Any, direction: Any) -> tuple[float, Any]:
                    return self._directional_evaluate(closure, x, step, direction)

                loss, flat_grad, t, ls_func_evals = strong_wolfe(
                    obj_func, x_init, t, d, loss, flat_grad, gtd, max_ls=max_eval - current_evals
                )
                self._add_grad(t, d)
                opt_cond = xp.abs(flat_grad).max() <= tolerance_grad
            else:
                self._add_grad(t, d)
                if n_iter != max_iter:
                    # Not after the last iteration: the next step evaluates it anyway.
                    with enable_grad():
                        loss = float(closure())
                    flat_grad = self._gather_flat_grad()
                    opt_cond = xp.abs(flat_grad).max() <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            # ---- stopping conditions
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if xp.abs(d * t).max() <= tolerance_change:
                break
            if abs(loss - prev_loss) < tolerance_change:
                break

        state["d"] = _pack(d)
        state["t"] = _pack(t)
        state["old_dirs"] = _pack(old_dirs)
        state["old_stps"] = _pack(old_stps)
        state["ro"] = _pack(ro)
        state["H_diag"] = _pack(h_diag)
        state["prev_flat_grad"] = _pack(prev_flat_grad)
        state["prev_loss"] = prev_loss
        if al is not None:
            state["al"] = _pack(al)
        return orig_loss


__all__ = ["LBFGS"]
