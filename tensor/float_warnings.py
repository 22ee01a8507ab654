"""IEEE results without numpy's warnings, as PyTorch gives them.

numpy warns when a float op divides by zero, overflows or meets an invalid value
(``x / 0``, ``exp(1000)``, ``sqrt(-1)``, a float32 too large for float16); PyTorch returns the
same inf and NaN silently. A ``np.errstate`` around every op would cost about 1 µs each on the
CPU path, so instead one warnings filter ignores exactly those messages when they are raised
from dtrain's own modules: nothing is checked until a warning is actually raised, and numpy
in the user's code still warns as it always did.
"""

from __future__ import annotations

import warnings

_NUMPY_FLOAT_MESSAGES = r"(divide by zero|invalid value|overflow|underflow) encountered"


def silence_numpy_float_warnings() -> None:
    """Ignore numpy's floating-point RuntimeWarnings raised inside dtrain (idempotent)."""
    warnings.filterwarnings(
        "ignore", message=_NUMPY_FLOAT_MESSAGES, category=RuntimeWarning, module=r"dtrain\."
    )
