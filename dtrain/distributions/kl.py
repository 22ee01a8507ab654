"""``dtrain.distributions.kl``: ``kl_divergence`` and ``register_kl``."""

from dtrain._tensor.distributions.kl import kl_divergence, register_kl

__all__ = ["kl_divergence", "register_kl"]
