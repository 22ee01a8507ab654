"""The random-sampling methods of ``Tensor``, out of place and in place.

Each is a door to the function of the same name in ``dtrain._tensor.functions``, which
``methods.bind`` sets as ``_fn`` here once every op module has loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dtrain._tensor.tensor import Tensor

_fn: Any = None


class RandomMethods:
    """Mixed into ``Tensor`` through ``TensorMethods``: random sampling."""

    __slots__ = ()

    def multinomial(
        self, num_samples: int, replacement: bool = False, generator: Any = None
    ) -> Tensor:
        return _fn.multinomial(self, num_samples, replacement, generator)

    def bernoulli(self, p: float | None = None, *, generator: Any = None) -> Tensor:
        return _fn.bernoulli(self, p, generator=generator)

    def normal_(self, mean: float = 0.0, std: float = 1.0, generator: Any = None) -> Tensor:
        return _fn.normal_(self, mean, std, generator)

    def uniform_(self, a: float = 0.0, b: float = 1.0, generator: Any = None) -> Tensor:
        return _fn.uniform_(self, a, b, generator)

    def bernoulli_(self, p: Any = 0.5, *, generator: Any = None) -> Tensor:
        return _fn.bernoulli_(self, p, generator)

    def exponential_(self, lambd: float = 1.0, *, generator: Any = None) -> Tensor:
        return _fn.exponential_(self, lambd, generator)
