"""``dtrain.utils.dlpack``: DLPack capsules, as ``torch.utils.dlpack``.

Prefer ``dtrain.from_dlpack(array)`` and ``Tensor.__dlpack__``; capsules are the older
protocol, and a capsule can be imported only once.
"""

from dtrain._tensor.dlpack import from_dlpack, to_dlpack

__all__ = ["from_dlpack", "to_dlpack"]
