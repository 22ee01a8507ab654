"""When dtrain may look at the values of an array to reject bad input.

Checking a value (an index in range, a target class) reads it on the host. On the CPU that
is free; on a GPU it waits for every queued kernel, which stalls the pipeline of a training
step and is refused inside a CUDA-graph capture. So, as PyTorch (which asserts on the
device), dtrain checks values of CUDA arrays only when ``DTRAIN_DEBUG=1`` and never while
capturing; unchecked bad values then give NaN or zero results instead of an error (each
op's docs say which).
"""

from __future__ import annotations

from typing import Any

from dtrain.runtime.backend import is_cuda_array
from dtrain.runtime.config import debug_checks


def may_check_values(array: Any) -> bool:
    """True when reading ``array``'s values on the host costs no GPU synchronisation, or when
    ``DTRAIN_DEBUG=1`` asks for the checks anyway (outside a CUDA-graph capture)."""
    if not is_cuda_array(array):
        return True
    from dtrain.runtime.cuda_graph import is_current_stream_capturing

    return debug_checks() and not is_current_stream_capturing()
