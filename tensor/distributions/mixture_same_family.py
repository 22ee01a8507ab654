"""``MixtureSameFamily(mixture_distribution, component_distribution)``: a mixture of ``k``
components of one family (a mixture density network's output), as PyTorch's."""

from __future__ import annotations

from typing import Any, ClassVar

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.categorical import Categorical
from dtrain._tensor.distributions.constraints_more import MixtureSameFamilyConstraint
from dtrain._tensor.distributions.distribution import Distribution, as_size
from dtrain._tensor.tensor import Tensor


class MixtureSameFamily(Distribution):
    """Weights from ``mixture_distribution`` (a ``Categorical`` over ``k``), components from
    ``component_distribution`` (batch shape ``(..., k)``): ``log_prob`` is the
    ``logsumexp`` over components; ``sample`` picks a component per draw (no
    ``rsample``, as PyTorch)."""

    arg_constraints: ClassVar[dict] = {}
    has_rsample = False

    def __init__(
        self,
        mixture_distribution: Categorical,
        component_distribution: Distribution,
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(mixture_distribution, Categorical):
            raise ValueError(
                "The Mixture distribution needs to be an instance of Categorical, got "
                f"{type(mixture_distribution).__name__}"
            )
        if not isinstance(component_distribution, Distribution):
            raise ValueError(
                "The Component distribution needs to be an instance of Distribution, got "
                f"{type(component_distribution).__name__}"
            )
        if len(component_distribution.batch_shape) < 1:
            raise ValueError(
                "component_distribution needs a batch dim for the components (batch_shape "
                f"(..., k)), got batch_shape {tuple(component_distribution.batch_shape)}"
            )
        mdbs = mixture_distribution.batch_shape
        cdbs = component_distribution.batch_shape[:-1]
        if len(mdbs) > len(cdbs):
            raise ValueError(
                f"`mixture_distribution.batch_shape` ({tuple(mdbs)}) has more dims than "
                f"`component_distribution.batch_shape[:-1]` ({tuple(cdbs)}); expand the "
                "components to the mixture's batch shape"
            )
        for size1, size2 in zip(reversed(mdbs), reversed(cdbs)):
            if size1 != 1 and size2 != 1 and size1 != size2:
                raise ValueError(
                    f"`mixture_distribution.batch_shape` ({tuple(mdbs)}) is not compatible "
                    f"with `component_distribution.batch_shape`({tuple(cdbs)})"
                )
        km = mixture_distribution.logits.shape[-1]
        kc = component_distribution.batch_shape[-1]
        if km != kc:
            raise ValueError(
                f"`mixture_distribution component` ({km}) does not equal "
                f"`component_distribution.batch_shape[-1]` ({kc})"
            )
        self._mixture_distribution = mixture_distribution
        self._component_distribution = component_distribution
        self._num_component = km
        event_shape = component_distribution.event_shape
        self._event_ndims = len(event_shape)
        super().__init__(cdbs, event_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> MixtureSameFamily:
        batch_shape = as_size(batch_shape, "batch_shape")
        new = self._get_checked_instance(MixtureSameFamily, _instance)
        new._component_distribution = self._component_distribution.expand(
            batch_shape + (self._num_component,)
        )
        new._mixture_distribution = self._mixture_distribution.expand(batch_shape)
        new._num_component = self._num_component
        new._event_ndims = self._event_ndims
        Distribution.__init__(
            new, batch_shape, new._component_distribution.event_shape, validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        return MixtureSameFamilyConstraint(self._component_distribution.support)

    @property
    def mixture_distribution(self) -> Categorical:
        """The ``Categorical`` over the components."""
        return self._mixture_distribution

    @property
    def component_distribution(self) -> Distribution:
        """The components (batch shape ``batch_shape + (k,)``)."""
        return self._component_distribution

    def _pad(self, x: Tensor) -> Tensor:
        return x.unsqueeze(-1 - self._event_ndims)

    def _pad_mixture_dimensions(self, x: Tensor) -> Tensor:
        dist_batch_ndims = len(self.batch_shape)
        cat_batch_ndims = len(self.mixture_distribution.batch_shape)
        pad_ndims = 0 if cat_batch_ndims == 1 else dist_batch_ndims - cat_batch_ndims
        xs = tuple(x.shape)
        return x.reshape(xs[:-1] + (1,) * pad_ndims + xs[-1:] + (1,) * self._event_ndims)

    @property
    def mean(self) -> Tensor:
        probs = self._pad_mixture_dimensions(self.mixture_distribution.probs)
        return (probs * self.component_distribution.mean).sum(-1 - self._event_ndims)

    @property
    def variance(self) -> Tensor:
        probs = self._pad_mixture_dimensions(self.mixture_distribution.probs)
        dim = -1 - self._event_ndims
        mean_cond_var = (probs * self.component_distribution.variance).sum(dim)
        spread = (self.component_distribution.mean - self._pad(self.mean)).pow(2.0)
        return mean_cond_var + (probs * spread).sum(dim)

    def cdf(self, x: Tensor) -> Tensor:
        cdf_x = self.component_distribution.cdf(self._pad(x))
        return (cdf_x * self.mixture_distribution.probs).sum(-1)

    def log_prob(self, x: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(x)
        log_prob_x = self.component_distribution.log_prob(self._pad(x))  # [S, B, k]
        log_mix_prob = self.mixture_distribution.logits.log_softmax(-1)  # [B, k]
        return (log_prob_x + log_mix_prob).logsumexp(-1)

    def sample(self, sample_shape: Any = ()) -> Tensor:
        sample_shape = as_size(sample_shape, "sample_shape")
        with no_grad():
            gather_dim = len(sample_shape) + len(self.batch_shape)
            es = tuple(self.event_shape)
            # A mixture batch that broadcasts over the components' batch is one independent
            # choice per batch entry, so expand before drawing (torch errors or misshapes).
            mix_sample = self.mixture_distribution.expand(self.batch_shape).sample(sample_shape)
            comp_samples = self.component_distribution.sample(sample_shape)
            mix_shape = tuple(mix_sample.shape)
            index = mix_sample.reshape(mix_shape + (1,) * (len(es) + 1))
            target = tuple(comp_samples.shape[:gather_dim]) + (1,) + es
            index = index.expand(target).contiguous()
            return comp_samples.gather(gather_dim, index).squeeze(gather_dim)

    def __repr__(self) -> str:
        return (
            f"MixtureSameFamily(\n  {self.mixture_distribution},\n  {self.component_distribution})"
        )


__all__ = ["MixtureSameFamily"]
