"""``dtrain.nn.utils.rnn``: padding variable-length sequences for the recurrent layers
(packed sequences are not offered: pad and mask)."""

from dtrain._tensor.nn.rnn_utils import (
    PackedSequence,
    pack_padded_sequence,
    pack_sequence,
    pad_packed_sequence,
    pad_sequence,
    unpad_sequence,
)

__all__ = [
    "PackedSequence",
    "pack_padded_sequence",
    "pack_sequence",
    "pad_packed_sequence",
    "pad_sequence",
    "unpad_sequence",
]
