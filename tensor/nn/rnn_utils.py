"""``nn.utils.rnn``: ``pad_sequence`` and ``unpad_sequence``.

Packed sequences are not implemented: ``PackedSequence``, ``pack_padded_sequence``,
``pack_sequence`` and ``pad_packed_sequence`` raise a NotImplementedError that names the
replacement (feed the padded batch and mask the steps past each length).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dtrain._tensor.creation import full
from dtrain._tensor.ops.shape import cat, stack
from dtrain._tensor.tensor import Tensor

_PACKED_FIX = (
    "{what}: packed sequences are not implemented in dtrain. Pad the batch instead "
    "(nn.utils.rnn.pad_sequence), run the RNN on the padded tensor and ignore the steps past "
    "each sequence's length: e.g. the last real output of a one-directional RNN is "
    "output[lengths - 1, arange(batch)]. The final states and a reverse direction then also "
    "see the padding, so mask or sort the batch by length if that matters."
)


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


class PackedSequence:
    """Not implemented (the name exists for imports and ``isinstance`` checks);
    constructing one raises NotImplementedError naming the fix."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(_PACKED_FIX.format(what="PackedSequence"))


def pack_padded_sequence(
    input: Tensor, lengths: Any, batch_first: bool = False, enforce_sorted: bool = True
) -> PackedSequence:
    """Not implemented: raises NotImplementedError naming the fix (pad and mask)."""
    raise NotImplementedError(_PACKED_FIX.format(what="pack_padded_sequence"))


def pack_sequence(sequences: Any, enforce_sorted: bool = True) -> PackedSequence:
    """Not implemented: raises NotImplementedError naming the fix (pad and mask)."""
    raise NotImplementedError(_PACKED_FIX.format(what="pack_sequence"))


def pad_packed_sequence(
    sequence: Any,
    batch_first: bool = False,
    padding_value: float = 0.0,
    total_length: int | None = None,
) -> tuple:
    """Not implemented: raises NotImplementedError naming the fix (pad and mask)."""
    raise NotImplementedError(_PACKED_FIX.format(what="pad_packed_sequence"))
