"""``Distribution``: the base class of every distribution, as ``torch.distributions``'.

Samples come from dtrain's random generator (``dt.manual_seed``), so a seed gives other
draws than PyTorch's; the distributions, densities and gradients are the same.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

from dtrain._tensor import functions as fn
from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.utils import lazy_property
from dtrain._tensor.size import Size
from dtrain._tensor.tensor import Tensor


def as_size(shape: Any, what: str) -> Size:
    """``shape`` (an int or a sequence of ints) as a ``Size``.

    Raises:
        TypeError: ``shape`` is not a shape; ``what`` names it in the message.
    """
    if isinstance(shape, int):
        shape = (shape,)
    try:
        return Size(shape)
    except TypeError:
        raise TypeError(
            f"{what} must be a tuple of ints (a Size), got {shape!r}; e.g. sample((10,))"
        ) from None


class Distribution:
    """A probability distribution with ``batch_shape`` independent, possibly different
    distributions, each over events of ``event_shape``.

    Args:
        batch_shape: The shape over which parameters are batched.
        event_shape: The shape of one sample (without batching).
        validate_args: Check the parameters (and the values given to ``log_prob``) against
            ``arg_constraints`` / ``support``; ``None`` uses the default
            (``Distribution.set_default_validate_args``; on unless Python runs with ``-O``).
    """

    has_rsample = False
    has_enumerate_support = False
    _validate_args = __debug__

    @staticmethod
    def set_default_validate_args(value: bool) -> None:
        """Turn argument validation on or off for distributions built from now on.

        Raises:
            ValueError: ``value`` is not a bool.
        """
        if value not in (True, False):
            raise ValueError(f"set_default_validate_args takes True or False, got {value!r}")
        Distribution._validate_args = bool(value)

    def __init__(
        self,
        batch_shape: Any = (),
        event_shape: Any = (),
        validate_args: bool | None = None,
    ) -> None:
        self._batch_shape = as_size(batch_shape, "batch_shape")
        self._event_shape = as_size(event_shape, "event_shape")
        if validate_args is not None:
            self._validate_args = validate_args
        if self._validate_args:
            try:
                arg_constraints = self.arg_constraints
            except NotImplementedError:
                arg_constraints = {}
                warnings.warn(
                    f"{type(self).__name__} does not define arg_constraints; set it to {{}} "
                    "or build the distribution with validate_args=False",
                    stacklevel=2,
                )
            for param, constraint in arg_constraints.items():
                if constraints.is_dependent(constraint):
                    continue  # depends on other parameters; checked by the subclass
                if param not in self.__dict__ and isinstance(
                    getattr(type(self), param, None), lazy_property
                ):
                    continue  # not given (e.g. logits when built from probs)
                value = getattr(self, param)
                if not bool(constraint.check(value).all()):
                    raise ValueError(
                        f"Expected parameter {param} ({type(value).__name__} of shape "
                        f"{tuple(value.shape)}) of distribution {self!r} to satisfy the "
                        f"constraint {constraint!r}, but found invalid values:\n{value}\n"
                        "Pass valid values, or validate_args=False to skip the check"
                    )

    def expand(self, batch_shape: Any, _instance: Any = None) -> Distribution:
        """A new distribution with the batch dims broadcast to ``batch_shape`` (the
        parameters are expanded, not copied; the arguments are not checked again)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement expand")

    @property
    def batch_shape(self) -> Size:
        """The shape over which parameters are batched."""
        return self._batch_shape

    @property
    def event_shape(self) -> Size:
        """The shape of one sample (without batching)."""
        return self._event_shape

    @property
    def arg_constraints(self) -> dict[str, constraints.Constraint]:
        """The constraint each tensor parameter must satisfy, by name."""
        raise NotImplementedError(
            f"{type(self).__name__} does not define arg_constraints; set it to {{}} or "
            "build the distribution with validate_args=False"
        )

    @property
    def support(self) -> constraints.Constraint:
        """The constraint the distribution's values satisfy."""
        raise NotImplementedError(f"{type(self).__name__} does not define support")

    @property
    def mean(self) -> Tensor:
        """The mean of the distribution."""
        raise NotImplementedError(f"{type(self).__name__} does not implement mean")

    @property
    def mode(self) -> Tensor:
        """The mode of the distribution."""
        raise NotImplementedError(f"{type(self).__name__} does not implement mode")

    @property
    def variance(self) -> Tensor:
        """The variance of the distribution."""
        raise NotImplementedError(f"{type(self).__name__} does not implement variance")

    @property
    def stddev(self) -> Tensor:
        """The standard deviation of the distribution."""
        return self.variance.sqrt()

    def sample(self, sample_shape: Any = ()) -> Tensor:
        """A sample of shape ``sample_shape + batch_shape + event_shape``, outside the graph."""
        with no_grad():
            return self.rsample(sample_shape)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        """A reparameterised sample: gradients flow from it to the parameters."""
        raise NotImplementedError(
            f"{type(self).__name__} has no reparameterised sampler (has_rsample is False); "
            "use sample() and a score-function (REINFORCE) gradient instead"
        )

    def sample_n(self, n: int) -> Tensor:
        """``n`` samples (deprecated in PyTorch; use ``sample((n,))``)."""
        return self.sample((n,))

    def log_prob(self, value: Tensor) -> Tensor:
        """The log density (or log mass) at ``value``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement log_prob")

    def cdf(self, value: Tensor) -> Tensor:
        """The cumulative distribution function at ``value``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement cdf")

    def icdf(self, value: Tensor) -> Tensor:
        """The inverse cumulative distribution function at ``value``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement icdf")

    def enumerate_support(self, expand: bool = True) -> Tensor:
        """Every value of a discrete distribution, along dim 0."""
        raise NotImplementedError(f"{type(self).__name__} does not implement enumerate_support")

    def entropy(self) -> Tensor:
        """The entropy, one value per batch element (shape ``batch_shape``)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement entropy")

    def perplexity(self) -> Tensor:
        """``exp(entropy())``."""
        return self.entropy().exp()

    def _extended_shape(self, sample_shape: Any = ()) -> Size:
        """``sample_shape + batch_shape + event_shape``."""
        return as_size(sample_shape, "sample_shape") + self._batch_shape + self._event_shape

    def _validate_sample(
        self, value: Tensor, support: constraints.Constraint | None = None
    ) -> None:
        """Check that ``value`` broadcasts with the distribution and lies in its support (or
        in ``support``, e.g. a ``cdf`` defined on the support's closure)."""
        if not isinstance(value, Tensor):
            raise ValueError(
                f"The value argument to log_prob must be a Tensor, got {type(value).__name__}"
            )
        event_dims = len(self._event_shape)
        if event_dims and tuple(value.shape[value.ndim - event_dims :]) != self._event_shape:
            raise ValueError(
                f"The right-most size of value must match event_shape: {tuple(value.shape)} "
                f"vs {tuple(self._event_shape)}"
            )
        expected = self._batch_shape + self._event_shape
        for i, j in zip(reversed(value.shape), reversed(expected)):
            if i != 1 and j != 1 and i != j:
                raise ValueError(
                    "Value is not broadcastable with batch_shape+event_shape: "
                    f"{tuple(value.shape)} vs {tuple(expected)}"
                )
        support = self.support if support is None else support
        if not bool(support.check(value).all()):
            raise ValueError(
                f"Expected value argument ({type(value).__name__} of shape {tuple(value.shape)}) "
                f"to be within the support ({support!r}) of the distribution {self!r}, but "
                f"found invalid values:\n{value}"
            )

    def _get_checked_instance(self, cls: type, _instance: Any = None) -> Any:
        if _instance is None and type(self).__init__ != cls.__init__:
            raise NotImplementedError(
                f"Subclass {type(self).__name__} of {cls.__name__} defines its own __init__, "
                "so it must also define expand()"
            )
        return self.__new__(type(self)) if _instance is None else _instance

    def __repr__(self) -> str:
        try:
            names = [k for k in self.arg_constraints if k in self.__dict__]
        except NotImplementedError:
            names = []
        parts = []
        for name in names:
            value = self.__dict__[name]
            shown = value if value.numel() == 1 else Size(value.shape)
            parts.append(f"{name}: {shown}")
        return f"{type(self).__name__}({', '.join(parts)})"


def standard_normal(shape: Any, like: Tensor) -> Tensor:
    """Standard normal draws of ``shape`` with ``like``'s dtype and device."""
    return fn.randn(tuple(shape), dtype=like.dtype, device=like.device)


def standard_uniform(shape: Any, like: Tensor, dtype: Any = None) -> Tensor:
    """Uniform ``[0, 1)`` draws of ``shape`` on ``like``'s device, in ``dtype`` (default
    ``like``'s dtype)."""
    return fn.rand(tuple(shape), dtype=dtype or like.dtype, device=like.device)


def batch_shape_of(given: tuple, param: Tensor) -> Size:
    """``()`` when every parameter was ``given`` as a number (as PyTorch), else the shape of
    the broadcast ``param``."""
    return Size(()) if all(isinstance(v, numbers.Number) for v in given) else param.shape


def expand_params(
    dist: Distribution,
    cls: type,
    batch_shape: Any,
    _instance: Any,
    names: tuple[str, ...],
    param_event_shape: tuple = (),
) -> Any:
    """The body of ``expand``: a new ``cls`` whose tensor parameters ``names`` (those set
    on ``dist``) are broadcast to ``batch_shape + param_event_shape`` without copying; the
    arguments are not checked again, and ``_validate_args`` is kept."""
    new = dist._get_checked_instance(cls, _instance)
    batch_shape = as_size(batch_shape, "batch_shape")
    for name in names:
        if name in dist.__dict__:
            setattr(new, name, dist.__dict__[name].expand(batch_shape + param_event_shape))
    Distribution.__init__(new, batch_shape, dist.event_shape, validate_args=False)
    new._validate_args = dist._validate_args
    return new


def enumerate_values(values: Tensor, batch_shape: Size, expand: bool) -> Tensor:
    """``enumerate_support``'s layout: the ``n`` values of ``values`` (shape ``(n, *event)``)
    along dim 0, in front of the batch dims (size 1 there, or ``batch_shape`` if
    ``expand``)."""
    n, event = values.shape[0], tuple(values.shape[1:])
    values = values.reshape((n,) + (1,) * len(batch_shape) + event)
    if expand:
        values = values.expand((n,) + tuple(batch_shape) + event)
    return values


__all__ = ["Distribution"]
