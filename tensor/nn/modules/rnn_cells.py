"""RNNCell, LSTMCell, GRUCell: one recurrent step each.

A cell projects its input with ``linear``, then takes one step with the op the sequence
layers use too (``ops/rnn_cell``: the product with ``weight_hh``, the gates'
nonlinearities and the state update, with its backward beside it). Parameter names,
shapes, gate order (LSTM ``i, f, g, o``; GRU ``r, z, n``) and initialisation are
PyTorch's: a PyTorch state dict loads as is.
"""

from __future__ import annotations

import math
from typing import Any

from dtrain._tensor.amp.autocast_mode import is_autocast_enabled
from dtrain._tensor.creation import empty, size_argument, zeros
from dtrain._tensor.nn import init
from dtrain._tensor.nn.functional.linear import linear
from dtrain._tensor.nn.module import Module
from dtrain._tensor.ops.rnn_cell import gru_step, lstm_step, rnn_step
from dtrain._tensor.ops.shape import cat
from dtrain._tensor.parameter import Parameter
from dtrain._tensor.tensor import Tensor


def check_state_dtype(where: str, state: Tensor, input: Tensor) -> None:
    """Refuse a hidden state of another dtype than the input (so the weights) outside
    autocast, as PyTorch: the step's products would promote the whole recurrence."""
    if state.dtype != input.dtype and not is_autocast_enabled(input.device.type):
        raise RuntimeError(
            f"{where}: hidden state dtype {state.dtype} does not match input dtype "
            f"{input.dtype}; convert the state (hx.to({input.dtype}))"
        )


class RNNCellBase(Module):
    """Parameters ``weight_ih`` (G·H, I), ``weight_hh`` (G·H, H), ``bias_ih``, ``bias_hh``
    (G·H) for G gates, all drawn from U(-1/√H, 1/√H) as PyTorch."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool,
        num_chunks: int,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        where = type(self).__name__
        self.input_size = size_argument(input_size, "input_size", where, 1)
        self.hidden_size = size_argument(hidden_size, "hidden_size", where, 1)
        if not isinstance(bias, bool):
            raise TypeError(f"{where}: bias should be of type bool, got {type(bias).__name__}")
        self.bias = bias
        rows = num_chunks * self.hidden_size
        self.weight_ih = Parameter(empty(rows, self.input_size, device=device, dtype=dtype))
        self.weight_hh = Parameter(empty(rows, self.hidden_size, device=device, dtype=dtype))
        if bias:
            self.bias_ih = Parameter(empty(rows, device=device, dtype=dtype))
            self.bias_hh = Parameter(empty(rows, device=device, dtype=dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation: every parameter from U(-1/√H, 1/√H)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in self.parameters():
            init.uniform_(parameter, -bound, bound)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            text += f", bias={self.bias}"
        nonlinearity = getattr(self, "nonlinearity", "tanh")
        if nonlinearity != "tanh":
            text += f", nonlinearity={nonlinearity}"
        return text

    def _batched(self, input: Tensor, states: tuple) -> tuple[Tensor, tuple, bool]:
        """``input`` as (N, I) and each state as (N, H) (zeros when None); and whether the
        call was unbatched (then the results lose the batch dim)."""
        where = type(self).__name__
        if input.ndim not in (1, 2):
            raise ValueError(f"{where}: Expected input to be 1D or 2D, got {input.ndim}D instead")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(
                f"{where}: input has {input.shape[-1]} features, expected input_size="
                f"{self.input_size}"
            )
        unbatched = input.ndim == 1
        if unbatched:
            input = input.unsqueeze(0)
        batch = input.shape[0]
        out = []
        for state in states:
            if state is None:
                state = zeros(batch, self.hidden_size, dtype=input.dtype, device=input.device)
            else:
                if state.ndim != (1 if unbatched else 2):
                    raise RuntimeError(
                        f"{where}: Expected hidden to be {1 if unbatched else 2}D for "
                        f"{1 if unbatched else 2}D input, got {state.ndim}D instead"
                    )
                check_state_dtype(where, state, input)
                if unbatched:
                    state = state.unsqueeze(0)
                if tuple(state.shape) != (batch, self.hidden_size):
                    raise RuntimeError(
                        f"{where}: hidden state has shape {tuple(state.shape)}, expected "
                        f"(batch, hidden_size) = {(batch, self.hidden_size)}"
                    )
            out.append(state)
        return input, tuple(out), unbatched


class RNNCell(RNNCellBase):
    """``h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)`` (or ``relu``), one step."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """``input`` (N, I) or (I,), ``hx`` (N, H) or (H,) (zeros if None) → h' like hx."""
        input, (h,), unbatched = self._batched(input, (hx,))
        projected = linear(input, self.weight_ih, self.bias_ih)
        h = rnn_step(projected, h, self.weight_hh, self.bias_hh, self.mode == "RNN_RELU")
        return h.squeeze(0) if unbatched else h


class LSTMCell(RNNCellBase):
    """One LSTM step; ``forward(input, (h, c))`` returns ``(h', c')``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """``input`` (N, I) or (I,), ``hx = (h, c)`` each (N, H) or (H,) (zeros if None)."""
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(
                f"LSTMCell: hx must be a tuple (h, c) of two tensors, got {type(hx).__name__}"
            )
        input, (h, c), unbatched = self._batched(input, (None, None) if hx is None else hx)
        bias = None if self.bias_ih is None else self.bias_ih + self.bias_hh
        projected = linear(input, self.weight_ih, bias)
        out = lstm_step(projected, cat([h, c], -1), self.weight_hh)
        # Copies, contiguous as PyTorch's (halves of one [h | c] array otherwise).
        h, c = out[:, : self.hidden_size].contiguous(), out[:, self.hidden_size :].contiguous()
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)


class GRUCell(RNNCellBase):
    """One GRU step: gates ``r, z, n``; ``h' = (1 - z) * n + z * h``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """``input`` (N, I) or (I,), ``hx`` (N, H) or (H,) (zeros if None) → h' like hx."""
        input, (h,), unbatched = self._batched(input, (hx,))
        projected = linear(input, self.weight_ih, self.bias_ih)
        h = gru_step(projected, h, self.weight_hh, self.bias_hh)
        return h.squeeze(0) if unbatched else h
