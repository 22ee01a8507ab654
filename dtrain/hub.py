"""``dt.hub``: the part of ``torch.hub`` that training scripts import for itself.

Scripts use ``from torch.hub import tqdm`` as a progress bar that needs no extra install:
this is tqdm where it is installed, else a plain iterator wrapper that draws nothing.
Loading models or weights from a hub is not offered: torch hub entries are Python code and
pickled checkpoints, and dtrain never unpickles a checkpoint (``dt.load`` reads
safetensors). ``load``/``load_state_dict_from_url`` raise and say what to do instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

try:
    from tqdm import tqdm
except ImportError:

    class tqdm:  # noqa: N801 - tqdm's own name, so that scripts' calls read the same
        """tqdm's common calls (iterate, ``update``, ``set_description``, ``close``, a
        ``with`` block) as no-ops around the iterable: tqdm itself is not installed."""

        def __init__(self, iterable: Iterable | None = None, *args: Any, **kwargs: Any) -> None:
            self.iterable = iterable
            self.total = kwargs.get("total")
            self.n = 0

        def __iter__(self) -> Iterator:
            for item in self.iterable if self.iterable is not None else ():
                self.n += 1
                yield item

        def __len__(self) -> int:
            return len(self.iterable) if self.iterable is not None else (self.total or 0)

        def __enter__(self) -> tqdm:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.close()

        def update(self, n: int = 1) -> None:
            self.n += n

        def set_description(self, *args: Any, **kwargs: Any) -> None:
            pass

        def set_postfix(self, *args: Any, **kwargs: Any) -> None:
            pass

        def close(self) -> None:
            pass


def _not_offered(name: str) -> NotImplementedError:
    return NotImplementedError(
        f"dt.hub.{name}: loading from a hub is not offered (hub entries are pickled "
        "checkpoints, which dtrain never unpickles); download the weights, convert them to "
        "a state dict of tensors (safetensors) and load it with dt.load + load_state_dict"
    )


def load(*args: Any, **kwargs: Any) -> Any:
    """Not offered: raises ``NotImplementedError`` saying what to do instead."""
    raise _not_offered("load")


def load_state_dict_from_url(*args: Any, **kwargs: Any) -> Any:
    """Not offered: raises ``NotImplementedError`` saying what to do instead."""
    raise _not_offered("load_state_dict_from_url")


__all__ = ["load", "load_state_dict_from_url", "tqdm"]
