"""``dtrain.nn.utils.parametrizations``: ``weight_norm`` and ``spectral_norm`` as
parametrizations (PyTorch's ``torch.nn.utils.parametrizations``; ``orthogonal`` is not
offered)."""

from dtrain._tensor.nn.parametrizations import spectral_norm, weight_norm

__all__ = ["spectral_norm", "weight_norm"]
