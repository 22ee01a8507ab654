"""``dt.backends.cuda``: ``matmul.allow_tf32``, tied to ``set_float32_matmul_precision``."""

from __future__ import annotations

from dtrain.runtime import matmul_precision


class _MatmulSwitches:
    """``dt.backends.cuda.matmul``: what PyTorch's ``torch.backends.cuda.matmul`` holds."""

    # Accepted and unused: dtrain's float16 products accumulate in float32 always.
    allow_fp16_reduced_precision_reduction = True
    allow_bf16_reduced_precision_reduction = True

    @property
    def allow_tf32(self) -> bool:
        """Whether float32 products on CUDA may use TF32 (precision other than "highest")."""
        return matmul_precision.get_float32_matmul_precision() != "highest"

    @allow_tf32.setter
    def allow_tf32(self, value: bool) -> None:
        matmul_precision.set_float32_matmul_precision("high" if value else "highest")


matmul = _MatmulSwitches()

__all__ = ["matmul"]
