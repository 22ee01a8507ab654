"""The modified Bessel functions ``I0, I1, K0, K1`` and their exponentially scaled forms.

Cephes' Chebyshev expansions, as PyTorch uses them (``i0`` ... in ATen's ``Math.h``): on
[0, 8] (I) or [0, 2] (K) in x, beyond in ``32 / x`` (I) or ``8 / x`` (K). Computed in
float64 for every float dtype, then rounded to it (PyTorch evaluates float32 in float32, with
fewer terms; dtrain's float32 is the float64 value rounded). numpy and cupy alike; on cupy
``cupyx.scipy.special`` computes the same expansions in one kernel.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain.runtime.backend import get_array_module
from dtrain.runtime.special_cupyx import unary

# exp(-x) I0(x) on [0, 8], in x / 2 - 2.
_I0_NEAR = (
    -4.41534164647933937950e-18, 3.33079451882223809783e-17, -2.43127984654795469359e-16,
    1.71539128555513303061e-15, -1.16853328779934516808e-14, 7.67618549860493561688e-14,
    -4.85644678311192946090e-13, 2.95505266312963983461e-12, -1.72682629144155570723e-11,
    9.67580903537323691224e-11, -5.18979560163526290666e-10, 2.65982372468238665035e-9,
    -1.30002500998624804212e-8, 6.04699502254191894932e-8, -2.67079385394061173391e-7,
    1.11738753912010371815e-6, -4.41673835845875056359e-6, 1.64484480707288970893e-5,
    -5.75419501008210370398e-5, 1.88502885095841655729e-4, -5.76375574538582365885e-4,
    1.63947561694133579842e-3, -4.32430999505057594430e-3, 1.05464603945949983183e-2,
    -2.37374148058994688156e-2, 4.93052842396707084878e-2, -9.49010970480476444210e-2,
    1.71620901522208775349e-1, -3.04682672343198398683e-1, 6.76795274409476084995e-1,
)  # fmt: skip
# exp(-x) sqrt(x) I0(x) on [8, inf), in 32 / x - 2.
_I0_FAR = (
    -7.23318048787475395456e-18, -4.83050448594418207126e-18, 4.46562142029675999901e-17,
    3.46122286769746109310e-17, -2.82762398051658348494e-16, -3.42548561967721913462e-16,
    1.77256013305652638360e-15, 3.81168066935262242075e-15, -9.55484669882830764870e-15,
    -4.15056934728722208663e-14, 1.54008621752140982691e-14, 3.85277838274214270114e-13,
    7.18012445138366623367e-13, -1.79417853150680611778e-12, -1.32158118404477131188e-11,
    -3.14991652796324136454e-11, 1.18891471078464383424e-11, 4.94060238822496958910e-10,
    3.39623202570838634515e-9, 2.26666899049817806459e-8, 2.04891858946906374183e-7,
    2.89137052083475648297e-6, 6.88975834691682398426e-5, 3.36911647825569408990e-3,
    8.04490411014108831608e-1,
)  # fmt: skip
# exp(-x) I1(x) / x on [0, 8], in x / 2 - 2.
_I1_NEAR = (
    2.77791411276104639959e-18, -2.11142121435816608115e-17, 1.55363195773620046921e-16,
    -1.10559694773538630805e-15, 7.60068429473540693410e-15, -5.04218550472791168711e-14,
    3.22379336594557470981e-13, -1.98397439776494371520e-12, 1.17361862988909016308e-11,
    -6.66348972350202774223e-11, 3.62559028155211703701e-10, -1.88724975172282928790e-9,
    9.38153738649577178388e-9, -4.44505912879632808065e-8, 2.00329475355213526229e-7,
    -8.56872026469545474066e-7, 3.47025130813767847674e-6, -1.32731636560394358279e-5,
    4.78156510755005422638e-5, -1.61760815825896745588e-4, 5.12285956168575772895e-4,
    -1.51357245063125314899e-3, 4.15642294431288815669e-3, -1.05640848946261981558e-2,
    2.47264490306265168283e-2, -5.29459812080949914269e-2, 1.02643658689847095384e-1,
    -1.76416518357834055153e-1, 2.52587186443633654823e-1,
)  # fmt: skip
# exp(-x) sqrt(x) I1(x) on [8, inf), in 32 / x - 2.
_I1_FAR = (
    7.51729631084210481353e-18, 4.41434832307170791151e-18, -4.65030536848935832153e-17,
    -3.20952592199342395980e-17, 2.96262899764595013876e-16, 3.30820231092092828324e-16,
    -1.88035477551078244854e-15, -3.81440307243700780478e-15, 1.04202769841288027642e-14,
    4.27244001671195135429e-14, -2.10154184277266431302e-14, -4.08355111109219731823e-13,
    -7.19855177624590851209e-13, 2.03562854414708950722e-12, 1.41258074366137813316e-11,
    3.25260358301548823856e-11, -1.89749581235054123450e-11, -5.58974346219658380687e-10,
    -3.83538038596423702205e-9, -2.63146884688951950684e-8, -2.51223623787020892529e-7,
    -3.88256480887769039346e-6, -1.10588938762623716291e-4, -9.76109749136146840777e-3,
    7.78576235018280120474e-1,
)  # fmt: skip
# K0(x) + log(x / 2) I0(x) on [0, 2], in x^2 - 2.
_K0_NEAR = (
    1.37446543561352307156e-16, 4.25981614279661018399e-14, 1.03496952576338420167e-11,
    1.90451637722020886025e-09, 2.53479107902614945675e-07, 2.28621210311945178607e-05,
    1.26461541144692592338e-03, 3.59799365153615016266e-02, 3.44289899924628486886e-01,
    -5.35327393233902768720e-01,
)  # fmt: skip
# exp(x) sqrt(x) K0(x) on [2, inf), in 8 / x - 2.
_K0_FAR = (
    5.30043377268626276149e-18, -1.64758043015242134646e-17, 5.21039150503902756861e-17,
    -1.67823109680541210385e-16, 5.51205597852431940784e-16, -1.84859337734377901440e-15,
    6.34007647740507060557e-15, -2.22751332699166985548e-14, 8.03289077536357521100e-14,
    -2.98009692317273043925e-13, 1.14034058820847496303e-12, -4.51459788337394416547e-12,
    1.85594911495471785253e-11, -7.95748924447710747776e-11, 3.57739728140030116597e-10,
    -1.69753450938905987466e-09, 8.57403401741422608519e-09, -4.66048989768794782956e-08,
    2.76681363944501510342e-07, -1.83175552271911948767e-06, 1.39498137188764993662e-05,
    -1.28495495816278026384e-04, 1.56988388573005337491e-03, -3.14481013119645005427e-02,
    2.44030308206595545468e00,
)  # fmt: skip
# x K1(x) - x log(x / 2) I1(x) on [0, 2], in x^2 - 2.
_K1_NEAR = (
    -7.02386347938628759343e-18, -2.42744985051936593393e-15, -6.66690169419932900609e-13,
    -1.41148839263352776110e-10, -2.21338763073472585583e-08, -2.43340614156596823496e-06,
    -1.73028895751305206302e-04, -6.97572385963986435018e-03, -1.22611180822657148235e-01,
    -3.53155960776544875667e-01, 1.52530022733894777053e00,
)  # fmt: skip
# exp(x) sqrt(x) K1(x) on [2, inf), in 8 / x - 2.
_K1_FAR = (
    -5.75674448366501715755e-18, 1.79405087314755922667e-17, -5.68946255844285935196e-17,
    1.83809354436663880070e-16, -6.05704724837331885336e-16, 2.03870316562433424052e-15,
    -7.01983709041831346144e-15, 2.47715442448130437068e-14, -8.97670518232499435011e-14,
    3.34841966607842919884e-13, -1.28917396095102890680e-12, 5.13963967348173025100e-12,
    -2.12996783842756842877e-11, 9.21831518760500529508e-11, -4.19035475934189648750e-10,
    2.01504975519703286596e-09, -1.03457624656780970260e-08, 5.74108412545004946722e-08,
    -3.50196060308781257119e-07, 2.40648494783721712015e-06, -1.93619797416608296024e-05,
    1.95215518471351631108e-04, -2.85781685962277938680e-03, 1.03923736576817238437e-01,
    2.72062619048444266945e00,
)  # fmt: skip


def chebyshev(coefficients: tuple, y: Any) -> Any:
    """Cephes' ``chbevl``: ``sum' c_k T_k(y / 2)`` by Clenshaw's recurrence."""
    b0, b1, b2 = coefficients[0] + 0 * y, 0 * y, 0 * y
    for c in coefficients[1:]:
        b2, b1 = b1, b0
        b0 = y * b1 - b2 + c
    return 0.5 * (b0 - b2)


def _i0e(a: Any) -> Any:
    """exp(-a) I0(a) for a >= 0, float64."""
    xp = get_array_module(a)
    near = chebyshev(_I0_NEAR, xp.minimum(a, 8.0) / 2 - 2)
    far_a = xp.maximum(a, 8.0)
    far = chebyshev(_I0_FAR, 32.0 / far_a - 2) / xp.sqrt(far_a)
    return xp.where(a <= 8.0, near, far)


_TINY = float(np.nextafter(0.0, 1.0))


def _i1e(a: Any) -> Any:
    """exp(-a) I1(a) for a >= 0, float64."""
    xp = get_array_module(a)
    near = chebyshev(_I1_NEAR, xp.minimum(a, 8.0) / 2 - 2) * a
    far_a = xp.maximum(a, 8.0)
    far = chebyshev(_I1_FAR, 32.0 / far_a - 2) / xp.sqrt(far_a)
    return xp.where(a <= 8.0, near, far)


def _scaled_k(order: int, x: Any) -> Any:
    """exp(x) K_order(x) for x > 0, float64 (+inf at 0, NaN below)."""
    xp = get_array_module(x)
    small = xp.clip(x, _TINY, 2.0)  # log and 1/x stay finite down to the least subnormal
    near_arg = small * small - 2
    log_half = xp.log(small) - math.log(2)  # small / 2 underflows at 5e-324
    if order == 0:
        near = chebyshev(_K0_NEAR, near_arg) - log_half * _i0e(small) * xp.exp(small)
    else:
        near = log_half * _i1e(small) * xp.exp(small) + chebyshev(_K1_NEAR, near_arg) / small
    large = xp.maximum(x, 2.0)
    far = chebyshev(_K0_FAR if order == 0 else _K1_FAR, 8.0 / large - 2) / xp.sqrt(large)
    out = xp.where(x <= 2.0, near * xp.exp(small), far)
    return xp.where(x == 0, np.inf, xp.where(x < 0, np.nan, out))


def _odd(z: Any, value: Any) -> Any:
    """``value`` negated where ``z < 0`` (so +0 at -0, as PyTorch)."""
    return get_array_module(z).where(z < 0, -value, value)


def _exp(z: Any) -> Any:
    return get_array_module(z).exp(z)


# The array code paths take their module from their argument: on a GPU, call_float64 runs
# them once on host (numpy) values for the edges at +-inf and +-0.
def i0(x: Any) -> Any:
    """``I0(x)`` of a float array (even; +inf beyond about 713)."""
    return unary("i0", x, lambda z: _i0e(abs(z)) * _exp(abs(z)))


def i0e(x: Any) -> Any:
    """``exp(-|x|) I0(x)`` of a float array."""
    return unary("i0e", x, lambda z: _i0e(abs(z)))


def i1(x: Any) -> Any:
    """``I1(x)`` of a float array (odd)."""
    return unary("i1", x, lambda z: _odd(z, _i1e(abs(z)) * _exp(abs(z))))


def i1e(x: Any) -> Any:
    """``exp(-|x|) I1(x)`` of a float array (odd)."""
    return unary("i1e", x, lambda z: _odd(z, _i1e(abs(z))))


def k0(x: Any) -> Any:
    """``K0(x)`` of a float array: +inf at 0, NaN for x < 0."""
    return unary("modified_bessel_k0", x, lambda z: _scaled_k(0, z) * _exp(-z))


def k1(x: Any) -> Any:
    """``K1(x)`` of a float array: +inf at 0, NaN for x < 0."""
    return unary("modified_bessel_k1", x, lambda z: _scaled_k(1, z) * _exp(-z))


def k0e(x: Any) -> Any:
    """``exp(x) K0(x)`` of a float array: +inf at 0, NaN for x < 0."""
    return unary("scaled_modified_bessel_k0", x, lambda z: _scaled_k(0, z))


def k1e(x: Any) -> Any:
    """``exp(x) K1(x)`` of a float array: +inf at 0, NaN for x < 0."""
    return unary("scaled_modified_bessel_k1", x, lambda z: _scaled_k(1, z))


__all__ = ["chebyshev", "i0", "i0e", "i1", "i1e", "k0", "k0e", "k1", "k1e"]
