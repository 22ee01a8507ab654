"""``dtrain.testing``: ``assert_close``, as ``torch.testing``."""

from dtrain._tensor.testing import assert_close

__all__ = ["assert_close"]
