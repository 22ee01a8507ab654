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

#: The filter list the filter was last put in. ``warnings.catch_warnings`` swaps in a copy
#: and puts the old list back on exit, so a filter added inside one (pytest imports test
#: modules inside one) would vanish; ``Op.apply`` compares this with ``warnings.filters``
#: (one identity check) and puts the filter back when the list is another.
installed_in: list | None = None

_NUMPY_FLOAT_MESSAGES = (
    r"(divide by zero|invalid value|overflow|underflow) encountered"
    r"|Mean of empty slice|Degrees of freedom <= 0"  # numpy's NaN for a mean/var of nothing
)


def silence_numpy_float_warnings() -> None:
    """Ignore numpy's floating-point RuntimeWarnings raised inside dtrain (idempotent)."""
    global installed_in
    warnings.filterwarnings(
        "ignore", message=_NUMPY_FLOAT_MESSAGES, category=RuntimeWarning, module=r"dtrain\."
    )
    installed_in = warnings.filters
