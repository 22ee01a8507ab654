"""RNN, LSTM, GRU: stacked, optionally bidirectional recurrent layers with PyTorch's
arguments, parameter names (``weight_ih_l0``, ``bias_hh_l1_reverse`` ...), shapes, gate
order and initialisation, so a PyTorch state dict loads and gives the same outputs.

Each layer and direction projects the whole sequence's input with one product, then steps
through time, each step one op of ``ops/rnn_cell`` (product with ``weight_hh``, gates and
state update, backward beside them). A ``PackedSequence`` runs on its rows as they are:
step t takes the first ``batch_sizes[t]`` rows of the state, so every sequence's final
state is taken at its own last step, and the reverse direction starts there.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

from dtrain._tensor.creation import empty, size_argument, zeros
from dtrain._tensor.nn import init
from dtrain._tensor.nn.functional.dropout import dropout as dropout_fn
from dtrain._tensor.nn.functional.linear import linear
from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.modules.rnn_cells import check_state_dtype
from dtrain._tensor.nn.rnn_utils import PackedSequence
from dtrain._tensor.ops.rnn_cell import gru_step, lstm_step, rnn_step
from dtrain._tensor.ops.shape import cat, stack
from dtrain._tensor.parameter import Parameter
from dtrain._tensor.tensor import Tensor

# Rows of weight_ih / weight_hh per hidden unit.
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


class RNNBase(Module):
    """The shared body of ``RNN``, ``LSTM`` and ``GRU`` (``mode`` ``"RNN_TANH"``,
    ``"RNN_RELU"``, ``"LSTM"`` or ``"GRU"``)."""

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if mode not in GATES:
            raise ValueError(f"Unrecognized RNN mode: {mode!r}; expected one of {list(GATES)}")
        where = type(self).__name__
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, numbers.Number)
            or not 0 <= dropout <= 1
        ):
            raise ValueError(
                f"{where}: dropout should be a number in range [0, 1] representing the "
                f"probability of an element being zeroed, got {dropout!r}"
            )
        for name, flag in (("bias", bias), ("batch_first", batch_first)):
            if not isinstance(flag, bool):
                raise TypeError(f"{where}: {name} should be of type bool, got {flag!r}")
        self.mode = mode
        self.input_size = size_argument(input_size, "input_size", where, 1)
        self.hidden_size = size_argument(hidden_size, "hidden_size", where, 1)
        self.num_layers = size_argument(num_layers, "num_layers", where, 1)
        self.proj_size = size_argument(proj_size, "proj_size", where, 0)
        if self.proj_size and mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"{where}: proj_size {self.proj_size} has to be smaller than hidden_size "
                f"{self.hidden_size}"
            )
        if dropout > 0 and self.num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                f"num_layers={self.num_layers}",
                stacklevel=2,
            )
        self.bias, self.batch_first = bias, batch_first
        self.dropout, self.bidirectional = float(dropout), bool(bidirectional)
        directions = 2 if self.bidirectional else 1
        out_size = self.proj_size or self.hidden_size
        rows = GATES[mode] * self.hidden_size
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else out_size * directions
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                shapes = {
                    "weight_ih": (rows, layer_input),
                    "weight_hh": (rows, out_size),
                }
                if bias:
                    shapes.update(bias_ih=(rows,), bias_hh=(rows,))
                if self.proj_size:
                    shapes["weight_hr"] = (self.proj_size, self.hidden_size)
                names = []
                for name, shape in shapes.items():
                    setattr(
                        self, name + suffix, Parameter(empty(shape, device=device, dtype=dtype))
                    )
                    names.append(name + suffix)
                self._flat_weights_names += names
                self._all_weights.append(names)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation: every parameter from U(-1/√H, 1/√H)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in self.parameters():
            init.uniform_(parameter, -bound, bound)

    def flatten_parameters(self) -> None:
        """A no-op kept for PyTorch scripts (cuDNN's packed weights do not exist here)."""

    @property
    def all_weights(self) -> list:
        """The parameters per layer and direction, as PyTorch's ``all_weights``."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            text += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if self.bias is not True:
            text += f", bias={self.bias}"
        if self.batch_first is not False:
            text += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            text += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            text += f", bidirectional={self.bidirectional}"
        return text

    # ---- forward ---------------------------------------------------------------------------
    def _prepare(self, input: Any, states: tuple) -> tuple:
        """Check the call; return ``(data, batch_sizes, states, unbatched, packed)``: the
        input as (rows, I) rows of its time steps in turn (a packed sequence's data, or the
        padded input's (L·N, I)), the batch size of each step, each state as
        (D·layers, N, ·) in the data's batch order (zeros when None), whether the call was
        unbatched, and the PackedSequence given (or None)."""
        where = type(self).__name__
        packed = input if isinstance(input, PackedSequence) else None
        if packed is not None:
            data, unbatched = packed.data, False
            batch_sizes = [int(size) for size in packed.batch_sizes.tolist()]
            if not batch_sizes:
                raise ValueError(f"{where}: the PackedSequence is empty (no time steps)")
            if data.ndim != 2:
                raise ValueError(
                    f"{where}: a PackedSequence's data must be 2-D (rows, input_size), got "
                    f"{data.ndim}-D; pack (L, N, I) or (N, L, I) input"
                )
        elif not isinstance(input, Tensor):
            raise TypeError(
                f"{where}: input must be a Tensor or a PackedSequence, got {type(input).__name__}"
            )
        elif input.ndim not in (2, 3):
            raise ValueError(f"{where}: Expected input to be 2D or 3D, got {input.ndim}D tensor")
        else:
            data = input
        if data.shape[-1] != self.input_size:
            raise RuntimeError(
                f"{where}: input.size(-1) must be equal to input_size. Expected "
                f"{self.input_size}, got {data.shape[-1]}"
            )
        if packed is None:
            unbatched = input.ndim == 2
            if unbatched:
                input = input.unsqueeze(1)
            elif self.batch_first:
                input = input.transpose(0, 1)
            if input.shape[0] == 0:
                raise ValueError(f"{where}: the input sequence is empty (length 0); give >= 1 step")
            batch_sizes = [input.shape[1]] * input.shape[0]
            data = input.reshape(-1, self.input_size)
        batch = batch_sizes[0]
        directions = 2 if self.bidirectional else 1
        sizes = [self.proj_size or self.hidden_size, self.hidden_size]  # h, then LSTM's c
        out = []
        for state, size in zip(states, sizes):
            expected = (self.num_layers * directions, batch, size)
            if state is None:
                state = zeros(expected, dtype=data.dtype, device=data.device)
            else:
                wanted = 2 if unbatched else 3
                if state.ndim != wanted:
                    raise RuntimeError(
                        f"{where}: for {'unbatched 2-D' if unbatched else 'batched 3-D'} input, "
                        f"hx should also be {wanted}-D but got {state.ndim}-D tensor"
                    )
                check_state_dtype(where, state, data)
                if unbatched:
                    state = state.unsqueeze(1)
                if tuple(state.shape) != expected:
                    shown = expected[:1] + expected[2:] if unbatched else expected
                    got = state.shape[:1] + state.shape[2:] if unbatched else state.shape
                    raise RuntimeError(f"{where}: Expected hidden size {shown}, got {list(got)}")
                if packed is not None and packed.sorted_indices is not None:
                    state = state.index_select(1, packed.sorted_indices)
            out.append(state)
        return data, batch_sizes, tuple(out), unbatched, packed

    def _run(self, data: Tensor, batch_sizes: list, h0: Tensor, c0: Tensor | None) -> tuple:
        """The stacked layers on the rows of every time step (``batch_sizes[t]`` rows for
        step t, nonincreasing); returns (output rows, h_n, c_n or None)."""
        directions = 2 if self.bidirectional else 1
        final_h, final_c = [], []
        layer_input = data
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                names = self._all_weights[index]
                params = {name.split("_l")[0]: getattr(self, name) for name in names}
                # One product for every time step's input projection. LSTM's b_hh joins the
                # product's bias: added to the product it would make a second full-size
                # array (in float32 under autocast, cast again at every step).
                bias = params.get("bias_ih")
                if self.mode == "LSTM" and bias is not None:
                    bias = bias + params["bias_hh"]
                projected = linear(layer_input, params["weight_ih"], bias)
                state = cat([h0[index], c0[index]], -1) if c0 is not None else h0[index]
                output, state = self._direction(params, projected, state, batch_sizes, direction)
                outputs.append(output)
                if self.mode == "LSTM":
                    size = self.proj_size or self.hidden_size
                    final_h.append(state[:, :size])
                    final_c.append(state[:, size:])
                else:
                    final_h.append(state)
            layer_input = outputs[0] if directions == 1 else cat(outputs, -1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = dropout_fn(layer_input, self.dropout, training=True)
        c_n = stack(final_c) if c0 is not None else None
        return layer_input, stack(final_h), c_n

    def _direction(
        self, params: dict, projected: Tensor, state0: Tensor, batch_sizes: list, reverse: int
    ) -> tuple[Tensor, Tensor]:
        """One layer in one direction: (output rows, final state). A sequence's final state is
        taken at its own last step: as the batch shrinks (shorter sequences end, going
        forward) the rows that stop are set aside; going backward, each sequence joins with
        its initial state at its own last step."""
        starts = [0]
        for size in batch_sizes[:-1]:
            starts.append(starts[-1] + size)
        w_hh, b_hh, w_hr = params["weight_hh"], params.get("bias_hh"), params.get("weight_hr")
        hidden = self.hidden_size
        relu = self.mode == "RNN_RELU"
        steps = range(len(batch_sizes) - 1, -1, -1) if reverse else range(len(batch_sizes))
        state = state0 if not reverse else state0[: batch_sizes[-1]]
        finished = []  # going forward: the final states of the sequences that have ended
        hs: list = [None] * len(batch_sizes)
        for t in steps:
            size, start = batch_sizes[t], starts[t]
            rows = state.shape[0]
            if size < rows:
                finished.append(state[size:])
                state = state[:size]
            elif size > rows:
                state = cat([state, state0[rows:size]])
            if self.mode == "LSTM":
                state = lstm_step(projected, state, w_hh, start, start + size)
                if w_hr is not None:
                    h = linear(state[:, :hidden], w_hr)
                    state = cat([h, state[:, hidden:]], -1)
                    hs[t] = h
                else:
                    # The h half only, so the output is contiguous; without a graph, a copy,
                    # so each step's c is freed at the next step.
                    h = state[:, :hidden]
                    hs[t] = h if state.requires_grad else h.contiguous()
            elif self.mode == "GRU":
                state = hs[t] = gru_step(projected, state, w_hh, b_hh, start, start + size)
            else:
                state = hs[t] = rnn_step(projected, state, w_hh, b_hh, relu, start, start + size)
        output = hs[0].contiguous() if len(hs) == 1 else cat(hs)
        if finished:
            state = cat([state, *reversed(finished)])
        return output, state

    def _finish(
        self, output: Tensor, states: tuple, batch_sizes: list, unbatched: bool, packed: Any
    ) -> tuple:
        if packed is not None:
            output = PackedSequence(
                output, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
            )
            if packed.unsorted_indices is not None:
                states = tuple(s.index_select(1, packed.unsorted_indices) for s in states)
            return output, states
        output = output.reshape(len(batch_sizes), batch_sizes[0], output.shape[-1])
        if unbatched:
            return output.squeeze(1), tuple(s.squeeze(1) for s in states)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, states

    def _forward(self, input: Any, states: tuple) -> tuple:
        data, batch_sizes, states, unbatched, packed = self._prepare(input, states)
        h0, c0 = states if len(states) == 2 else (states[0], None)
        output, h_n, c_n = self._run(data, batch_sizes, h0, c0)
        states = (h_n,) if c_n is None else (h_n, c_n)
        return self._finish(output, states, batch_sizes, unbatched, packed)


class RNN(RNNBase):
    """Elman RNN: ``h_t = tanh(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)`` (or relu), with
    PyTorch's arguments: ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh',
    bias=True, batch_first=False, dropout=0.0, bidirectional=False)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:  # (input_size, hidden_size, num_layers, nonlinearity, ...)
            nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", *args, **kwargs)
        self.nonlinearity = nonlinearity

    def forward(self, input: Any, hx: Tensor | None = None) -> tuple[Any, Tensor]:
        """``input`` (L, N, I) ((N, L, I) with ``batch_first``, or (L, I) unbatched, or a
        ``PackedSequence``) and ``hx`` (D·num_layers, N, H) (zeros if None) → ``(output
        (L, N, D·H) or a PackedSequence, h_n)``; h_n is each sequence's state at its own
        last step."""
        output, (h_n,) = self._forward(input, (hx,))
        return output, h_n


class LSTM(RNNBase):
    """Long short-term memory layers (gates ``i, f, g, o`` as PyTorch), with PyTorch's
    arguments, ``proj_size`` included; ``forward(input, (h0, c0))`` returns
    ``(output, (h_n, c_n))``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("LSTM", *args, **kwargs)

    def forward(
        self, input: Any, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Any, tuple[Tensor, Tensor]]:
        """``input`` (L, N, I) ((N, L, I) with ``batch_first``, (L, I) unbatched, or a
        ``PackedSequence``, then the output is one too) and
        ``hx = (h0, c0)``, each (D·num_layers, N, ·) (zeros if None) → ``(output, (h_n,
        c_n))``; output (L, N, D·H_out) with H_out = proj_size or hidden_size."""
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(
                f"LSTM: hx must be a tuple (h0, c0) of two tensors, got {type(hx).__name__}"
            )
        output, (h_n, c_n) = self._forward(input, (None, None) if hx is None else tuple(hx))
        return output, (h_n, c_n)


class GRU(RNNBase):
    """Gated recurrent unit layers (gates ``r, z, n`` as PyTorch), with PyTorch's
    arguments; ``forward(input, h0)`` returns ``(output, h_n)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)

    def forward(self, input: Any, hx: Tensor | None = None) -> tuple[Any, Tensor]:
        """As ``RNN.forward``."""
        output, (h_n,) = self._forward(input, (hx,))
        return output, h_n
