"""Forms old PyTorch scripts use: the deprecated number-first overloads (``add_(alpha,
other)``, ``addcmul_(value, t1, t2)``, ...), with PyTorch's warning, and a silent log(0)."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain as dt


def test_number_first_add_and_sub_scale_the_tensor():
    p, g = dt.ones(3), dt.full((3,), 2.0)
    with pytest.warns(UserWarning, match=r"This overload of add_ is deprecated"):
        p.add_(-0.1, g)  # word_language_model's p.data.add_(-lr, p.grad)
    np.testing.assert_allclose(p.numpy(), [0.8] * 3, rtol=1e-6)
    with pytest.warns(UserWarning, match="overload of add is deprecated"):
        np.testing.assert_allclose(p.add(2.0, g).numpy(), [4.8] * 3, rtol=1e-6)
    with pytest.warns(UserWarning, match="overload of sub is deprecated"):
        np.testing.assert_allclose(p.sub(1.0, g).numpy(), [-1.2] * 3, rtol=1e-6)
    with pytest.warns(UserWarning, match="overload of sub_ is deprecated"):
        np.testing.assert_allclose(p.sub_(1.0, g).numpy(), [-1.2] * 3, rtol=1e-6)
    np.testing.assert_allclose(dt.ones(2).add(dt.ones(2), alpha=3).numpy(), [4.0, 4.0])


def test_value_first_addcmul_and_addcdiv():
    g = dt.full((2,), 2.0)
    with pytest.warns(UserWarning, match="overload of addcmul_ is deprecated"):
        np.testing.assert_allclose(dt.zeros(2).addcmul_(0.5, g, g).numpy(), [2.0, 2.0])
    with pytest.warns(UserWarning, match="overload of addcdiv_ is deprecated"):
        np.testing.assert_allclose(dt.zeros(2).addcdiv_(0.5, g, g).numpy(), [0.5, 0.5])
    with pytest.warns(UserWarning, match="overload of addcmul is deprecated"):
        np.testing.assert_allclose(dt.zeros(2).addcmul(2, g, g).numpy(), [8.0, 8.0])
    with pytest.raises(TypeError, match="takes tensor1, tensor2 and the keyword value"):
        dt.zeros(2).addcmul(g, g, g)


def test_number_first_matches_torch():
    torch = pytest.importorskip("torch")
    for lib in (torch, dt):
        with pytest.warns(UserWarning):
            p = lib.ones(3)
            p.add_(-0.25, lib.arange(3.0))
            q = lib.zeros(3).addcdiv_(2.0, lib.ones(3), lib.full((3,), 4.0))
        if lib is torch:
            expected = (p.numpy(), q.numpy())
    np.testing.assert_allclose(p.numpy(), expected[0])
    np.testing.assert_allclose(q.numpy(), expected[1])


def test_log_of_zero_and_negatives_is_silent_as_in_pytorch():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a causal mask's log(tril(ones)) under -W error
        out = dt.log(dt.tensor([0.0, 1.0, -1.0]))
        out1p = dt.log1p(dt.tensor([-1.0, -2.0]))
        x = dt.tensor([0.0, 1.0], requires_grad=True)
        (dt.log(x).sum() + dt.log1p(x - 1).sum()).backward()  # 1/0 = inf, silently too
    assert x.grad.tolist() == [np.inf, 2.0]
    assert out[0].item() == -np.inf and out[1].item() == 0.0 and np.isnan(out[2].item())
    assert out1p[0].item() == -np.inf and np.isnan(out1p[1].item())


def test_modern_calls_are_not_taken_for_the_old_order():
    import warnings

    x, t = dt.tensor([1.0, 2.0]), dt.tensor([10.0, 20.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these is the deprecated form
        assert x.add(3, alpha=dt.tensor(2.0)).tolist() == [7.0, 8.0]
        assert x.add(t, alpha=2).tolist() == [21.0, 42.0]
        assert x.add(3).tolist() == [4.0, 5.0]
        assert x.addcmul(t, t, value=dt.tensor(0.5)).tolist() == [51.0, 202.0]
    with pytest.warns(UserWarning, match="deprecated"):  # numpy and 0-d numbers first
        assert x.add(np.bool_(True), t).tolist() == [11.0, 22.0]
    with pytest.warns(UserWarning, match="deprecated"):
        assert x.addcmul(dt.tensor(0.5), t, t).tolist() == [51.0, 202.0]
    with pytest.raises(TypeError, match="and value="):  # the old order and value= both
        x.addcmul(0.5, t, t, value=2)
