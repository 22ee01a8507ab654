"""``dtrain.nn.utils.rnn``: padding and packing variable-length sequences for the recurrent
layers, as ``torch.nn.utils.rnn``."""

from dtrain._tensor.nn.rnn_utils import (
    PackedSequence,
    pack_padded_sequence,
    pack_sequence,
    pad_packed_sequence,
    pad_sequence,
    unpack_sequence,
    unpad_sequence,
)

__all__ = [
    "PackedSequence",
    "pack_padded_sequence",
    "pack_sequence",
    "pad_packed_sequence",
    "pad_sequence",
    "unpack_sequence",
    "unpad_sequence",
]
