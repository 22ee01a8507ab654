"""``nn.utils.rnn``: padding and packing variable-length sequences, as PyTorch's.

A ``PackedSequence`` holds the rows of every time step's live sequences one step after the
other (``data``, (sum of lengths, *)), the number of live sequences per step
(``batch_sizes``, a CPU int64 tensor, nonincreasing) and, for a batch that was not sorted
by decreasing length, the permutation that sorted it (``sorted_indices``) and its inverse.
Packing and unpacking are one row move each (``ops/rnn_pack``); gradients flow through both.
"""

from __future__ import annotations

import itertools
from collections import namedtuple
from collections.abc import Iterable
from typing import Any

import numpy as np

from dtrain._tensor.creation import full, tensor
from dtrain._tensor.ops.rnn_pack import move_rows
from dtrain._tensor.ops.shape import cat, stack
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module


def pad_sequence(
    sequences: Iterable[Tensor],
    batch_first: bool = False,
    padding_value: float = 0.0,
    padding_side: str = "right",
) -> Tensor:
    """Stack tensors of shapes (L_i, *) into one (L_max, B, *) tensor, or (B, L_max, *)
    with ``batch_first``, filling the missing steps with ``padding_value`` on the
    ``padding_side`` ("right" or "left"). Gradients flow back to every sequence.

    Raises:
        ValueError: ``padding_side`` is neither "left" nor "right", or ``sequences`` is empty.
        TypeError: an element is not a Tensor.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(
            f"Expected padding_side to be one of left or right, but got {padding_side!r}."
        )
    if not isinstance(sequences, Iterable):
        raise TypeError(
            f"pad_sequence: expected an iterable of tensors, got {type(sequences).__name__}"
        )
    sequences = list(sequences)
    if not sequences:
        raise ValueError("pad_sequence: received an empty list of sequences; give at least one")
    for i, seq in enumerate(sequences):
        if not isinstance(seq, Tensor):
            raise TypeError(f"pad_sequence: element {i} is {type(seq).__name__}, expected a Tensor")
        if seq.ndim == 0:
            raise ValueError(f"pad_sequence: element {i} is 0-d; each sequence needs a length dim")
    longest = max(seq.shape[0] for seq in sequences)
    padded = []
    for seq in sequences:
        missing = longest - seq.shape[0]
        if missing:
            fill = full(
                (missing, *seq.shape[1:]), padding_value, dtype=seq.dtype, device=seq.device
            )
            seq = cat([seq, fill] if padding_side == "right" else [fill, seq])
        padded.append(seq)
    return stack(padded, 0 if batch_first else 1)


def unpad_sequence(padded_sequences: Tensor, lengths: Any, batch_first: bool = False) -> list:
    """The inverse of ``pad_sequence`` (right padding): the list of (L_i, *) tensors, one per
    entry of ``lengths`` (a tensor or a sequence of ints)."""
    if isinstance(lengths, Tensor):
        lengths = lengths.tolist()
    if not batch_first:
        padded_sequences = padded_sequences.transpose(0, 1)
    if len(lengths) != padded_sequences.shape[0]:
        raise ValueError(
            f"unpad_sequence: {len(lengths)} lengths for a batch of {padded_sequences.shape[0]}"
        )
    return [padded_sequences[i, : int(length)] for i, length in enumerate(lengths)]


def _int_list(values: Any, what: str) -> list[int]:
    if isinstance(values, Tensor):
        values = values.tolist()
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a 1-D sequence of ints, got {values!r}") from None


def _indices(order: Any, like: Tensor) -> Tensor:
    """``order`` as an int64 tensor on ``like``'s device."""
    return tensor(np.asarray(order, dtype=np.int64), device=like.device)


def _on_device(rows: np.ndarray, like: Tensor) -> Any:
    """A host index array as an array on ``like``'s device, for ``move_rows``."""
    return get_array_module(like._array).asarray(rows)


class PackedSequence(
    namedtuple("PackedSequence_", ["data", "batch_sizes", "sorted_indices", "unsorted_indices"])
):
    """A batch of variable-length sequences packed time step by time step (a namedtuple of
    ``data``, ``batch_sizes``, ``sorted_indices``, ``unsorted_indices``, as PyTorch's). Make
    one with ``pack_padded_sequence`` or ``pack_sequence``; RNN, LSTM and GRU take it as
    input and return one."""

    def __new__(
        cls,
        data: Any,
        batch_sizes: Tensor | None = None,
        sorted_indices: Tensor | None = None,
        unsorted_indices: Tensor | None = None,
    ) -> PackedSequence:
        if unsorted_indices is None and sorted_indices is not None:
            # The inverse permutation, where the indices live (no read back from a GPU).
            unsorted_indices = sorted_indices.argsort()
        if batch_sizes is None:  # PyTorch's form PackedSequence((data, batch_sizes))
            if not isinstance(data, (tuple, list)) or len(data) != 2:
                raise TypeError(
                    "PackedSequence: give batch_sizes, or data as a (data, batch_sizes) pair"
                )
            data, batch_sizes = data
        if not isinstance(batch_sizes, Tensor):
            batch_sizes = tensor(_int_list(batch_sizes, "batch_sizes"), dtype=np.int64)
        if batch_sizes.device.type != "cpu":
            raise ValueError(
                "batch_sizes should always be on CPU. Instances of PackedSequence should never "
                "be created manually. They should be instantiated by functions like "
                "pack_sequence and pack_padded_sequences in nn.utils.rnn."
            )
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)

    def to(self, *args: Any, **kwargs: Any) -> PackedSequence:
        """``data.to(...)``; the indices follow data's device, ``batch_sizes`` stays on the
        CPU. Returns ``self`` when data does not change."""
        data = self.data.to(*args, **kwargs)
        if data is self.data:
            return self
        moved = [None if t is None else t.to(data.device) for t in self[2:]]
        return type(self)(data, self.batch_sizes, *moved)

    def cuda(self, *args: Any, **kwargs: Any) -> PackedSequence:
        """As ``to`` a GPU."""
        data = self.data.cuda(*args, **kwargs)
        if data is self.data:
            return self
        moved = [None if t is None else t.to(data.device) for t in self[2:]]
        return type(self)(data, self.batch_sizes, *moved)

    def cpu(self) -> PackedSequence:
        """As ``to("cpu")``."""
        return self.to("cpu")

    def double(self) -> PackedSequence:
        return self.to(np.float64)

    def float(self) -> PackedSequence:
        return self.to(np.float32)

    def half(self) -> PackedSequence:
        return self.to(np.float16)

    def long(self) -> PackedSequence:
        return self.to(np.int64)

    def int(self) -> PackedSequence:
        return self.to(np.int32)

    @property
    def is_cuda(self) -> bool:
        """Whether ``data`` lives on a GPU."""
        return self.data.is_cuda


def pack_padded_sequence(
    input: Tensor, lengths: Any, batch_first: bool = False, enforce_sorted: bool = True
) -> PackedSequence:
    """Pack a padded batch (L, N, *) ((N, L, *) with ``batch_first``) of sequences of
    ``lengths`` (a list or CPU tensor of N ints). With ``enforce_sorted`` the lengths must
    be in decreasing order; otherwise the batch is sorted here and ``sorted_indices`` kept.

    Raises:
        RuntimeError: lengths not 1-D, unsorted (with ``enforce_sorted``), not positive or
            not one per sequence, or an empty input, as PyTorch.
        ValueError: a length longer than the padded input.
    """
    if isinstance(lengths, Tensor):
        ndim, device = lengths.ndim, lengths.device
    else:
        try:
            ndim, device = np.ndim(lengths), "cpu"
        except ValueError:  # ragged nested lists
            ndim, device = 2, "cpu"
    if ndim != 1 or str(device) != "cpu":
        raise RuntimeError(
            f"'lengths' argument should be a 1D CPU int64 tensor, but got {ndim}D {device} "
            "tensor; pass a 1-D list or CPU tensor of ints (lengths.cpu())"
        )
    lengths = _int_list(lengths, "pack_padded_sequence: lengths")
    if input.ndim < 2:
        raise ValueError(
            f"pack_padded_sequence: input must have a time and a batch dim, got shape "
            f"{tuple(input.shape)}"
        )
    steps, batch = (input.shape[1], input.shape[0]) if batch_first else input.shape[:2]
    if len(lengths) != batch:
        raise RuntimeError(
            f"Expected `len(lengths)` to be equal to batch_size, but got {len(lengths)} "
            f"(batch_size={batch})"
        )
    if input.numel() == 0:
        raise RuntimeError("Cannot pack empty tensors.")
    if enforce_sorted:
        if any(a < b for a, b in itertools.pairwise(lengths)):
            raise RuntimeError(
                "`lengths` array must be sorted in decreasing order when `enforce_sorted` is "
                "True. You can pass `enforce_sorted=False` to pack_padded_sequence and/or "
                "pack_sequence to sidestep this requirement if you do not need ONNX "
                "exportability."
            )
        order = np.arange(batch)
    else:
        order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    ordered = np.asarray(lengths, dtype=np.int64)[order]
    if batch and ordered[-1] <= 0:
        raise RuntimeError(
            "Length of all samples has to be greater than 0, but found an element in "
            "'lengths' that is <= 0"
        )
    if batch and ordered[0] > steps:
        raise ValueError(
            f"pack_padded_sequence: a length of {ordered[0]} exceeds the padded input's "
            f"{steps} time steps"
        )
    longest = int(ordered[0]) if batch else 0
    batch_sizes = (ordered[None, :] > np.arange(longest)[:, None]).sum(1)
    # Row of the padded input (seen as (L·N, *) or (N·L, *)) for each packed row.
    time = np.repeat(np.arange(longest), batch_sizes)
    which = order[np.concatenate([np.arange(size) for size in batch_sizes] or [[]]).astype(int)]
    source = which * steps + time if batch_first else time * batch + which
    flat = input.reshape(steps * batch, *input.shape[2:])
    data = move_rows(flat, _on_device(source, input), None, len(source))
    batch_sizes = tensor(batch_sizes.astype(np.int64))
    if enforce_sorted:
        return PackedSequence(data, batch_sizes, None, None)
    # The inverse from the host order, so that nothing is read back from a GPU.
    inverse = _indices(np.argsort(order), input)
    return PackedSequence(data, batch_sizes, _indices(order, input), inverse)


def pad_packed_sequence(
    sequence: PackedSequence,
    batch_first: bool = False,
    padding_value: float = 0.0,
    total_length: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The inverse of ``pack_padded_sequence``: ``(padded, lengths)`` with padded
    (T, N, *) ((N, T, *) with ``batch_first``) in the original batch order, the missing
    steps ``padding_value``; T is the longest length or ``total_length``. ``lengths``: a
    CPU int64 tensor.

    Raises:
        ValueError: ``total_length`` shorter than the longest sequence.
    """
    if not isinstance(sequence, PackedSequence):
        raise TypeError(
            f"pad_packed_sequence: expected a PackedSequence, got {type(sequence).__name__}"
        )
    batch_sizes = np.asarray(_int_list(sequence.batch_sizes, "batch_sizes"), dtype=np.int64)
    longest = len(batch_sizes)
    if total_length is not None:
        if total_length < longest:
            raise ValueError(
                "Expected total_length to be at least the length of the longest sequence in "
                f"input, but got total_length={total_length} and max sequence length being "
                f"{longest}"
            )
        longest = total_length
    batch = int(batch_sizes[0]) if len(batch_sizes) else 0
    if sequence.sorted_indices is None:
        order = np.arange(batch)
    else:
        order = np.asarray(_int_list(sequence.sorted_indices, "sorted_indices"))
    time = np.repeat(np.arange(len(batch_sizes)), batch_sizes)
    which = order[np.concatenate([np.arange(size) for size in batch_sizes] or [[]]).astype(int)]
    target = which * longest + time if batch_first else time * batch + which
    data = sequence.data
    rows = longest * batch
    padded = move_rows(data, None, _on_device(target, data), rows, padding_value)
    shape = (batch, longest) if batch_first else (longest, batch)
    padded = padded.reshape(*shape, *data.shape[1:])
    lengths = np.zeros(batch, dtype=np.int64)
    lengths[order] = (batch_sizes[None, :] > np.arange(batch)[:, None]).sum(1)
    return padded, tensor(lengths)


def pack_sequence(sequences: Any, enforce_sorted: bool = True) -> PackedSequence:
    """Pack a list of (L_i, *) tensors (decreasing lengths, unless ``enforce_sorted`` is
    False): ``pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=...)``."""
    sequences = list(sequences)
    lengths = [seq.shape[0] if isinstance(seq, Tensor) and seq.ndim else 0 for seq in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)


def unpack_sequence(packed_sequences: PackedSequence) -> list:
    """The inverse of ``pack_sequence``: the list of (L_i, *) tensors, in the original order."""
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)
