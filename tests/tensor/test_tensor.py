"""Creation, dtypes, attributes, conversions and the repr."""

import numpy as np
import pytest

import dtrain as dt


def test_python_data_gets_pytorch_default_dtypes():
    assert dt.tensor([1.0, 2.0]).dtype == dt.float32
    assert dt.tensor(3.5).dtype == dt.float32
    assert dt.tensor([1, 2]).dtype == dt.int64
    assert dt.tensor([True, False]).dtype == dt.bool
    assert dt.tensor([]).dtype == dt.float32


def test_numpy_arrays_keep_their_dtype():
    assert dt.tensor(np.zeros(2)).dtype == dt.float64
    assert dt.tensor(np.zeros(2, dtype=np.int32)).dtype == dt.int32
    assert dt.from_numpy(np.zeros(2, dtype=np.float16)).dtype == dt.float16


def test_tensor_copies_but_as_tensor_and_from_numpy_share():
    array = np.zeros(3, dtype=np.float32)
    copied, shared, bridged = dt.tensor(array), dt.as_tensor(array), dt.from_numpy(array)
    array[0] = 7
    assert copied[0].item() == 0
    assert shared[0].item() == 7 and bridged[0].item() == 7


def test_explicit_dtype_names_and_aliases():
    for spec, expected in [
        (dt.float64, np.float64),
        ("float16", np.float16),
        (dt.long, np.int64),
        (dt.int, np.int32),
        (dt.double, np.float64),
        (dt.half, np.float16),
        (float, np.float32),
    ]:
        assert dt.zeros(2, dtype=spec).dtype == expected
    with pytest.raises(TypeError, match="unsupported dtype"):
        dt.zeros(2, dtype="complex64")
    with pytest.raises(TypeError, match="unsupported dtype 'flaot32'"):
        dt.zeros(2, dtype="flaot32")  # a name numpy does not know: never a default
    with pytest.raises(TypeError, match="unsupported dtype"):
        dt.ones(2).to("flaot32")
    with pytest.raises(TypeError, match=r"numpy and cupy have no bfloat16; use dt\.float16"):
        dt.zeros(2, dtype="bfloat16")


def test_creation_functions():
    assert dt.zeros(2, 3).shape == (2, 3) and dt.zeros((2, 3)).shape == (2, 3)
    assert dt.ones(4).numpy().sum() == 4
    assert dt.full((2, 2), 7).dtype == dt.int64 and dt.full((2,), 1.5).numpy()[0] == 1.5
    assert dt.empty(3, 1).shape == (3, 1)
    np.testing.assert_array_equal(dt.eye(3).numpy(), np.eye(3))
    np.testing.assert_array_equal(dt.arange(5).numpy(), np.arange(5))
    assert dt.arange(5).dtype == dt.int64 and dt.arange(0, 1, 0.25).dtype == dt.float32
    np.testing.assert_allclose(dt.arange(1.0, 2.0, 0.5).numpy(), [1.0, 1.5])
    assert dt.arange(dt.tensor(3)).dtype == dt.int64  # a tensor's number, as PyTorch
    assert dt.arange(dt.tensor(3.0)).dtype == dt.float32
    np.testing.assert_allclose(dt.linspace(-1, 1, 5).numpy(), np.linspace(-1, 1, 5))
    base = dt.ones(2, 3, dtype=dt.float64)
    for like in (dt.zeros_like, dt.ones_like, dt.rand_like, dt.randn_like):
        out = like(base)
        assert out.shape == (2, 3) and out.dtype == dt.float64
    assert dt.full_like(base, 2.0).numpy().sum() == 12


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match=r"\[2, -1\]"):
        dt.zeros(2, -1)


def test_random_functions_are_seeded():
    dt.manual_seed(123)
    a = dt.randn(4), dt.rand(4), dt.randint(0, 10, (4,))
    dt.manual_seed(123)
    b = dt.randn(4), dt.rand(4), dt.randint(0, 10, (4,))
    for x, y in zip(a, b):
        assert dt.equal(x, y)
    assert dt.randint(5, (100,)).numpy().max() < 5
    u = dt.rand(10_000).numpy()
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.02
    n = dt.randn(10_000).numpy()
    assert abs(n.mean()) < 0.05 and abs(n.std() - 1) < 0.05


def test_generator_object_gives_its_own_stream():
    g1, g2 = dt.Generator().manual_seed(5), dt.Generator().manual_seed(5)
    assert dt.equal(dt.randn(3, generator=g1), dt.randn(3, generator=g2))


def test_multinomial():
    dt.manual_seed(0)
    probs = dt.tensor([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    draws = dt.multinomial(probs, 1000, replacement=True).numpy()
    assert (draws[0] == 1).all() and set(np.unique(draws[1])) == {0, 2}
    unique = probs[1].multinomial(2).numpy()
    assert sorted(unique.tolist()) == [0, 2]
    with pytest.raises(ValueError, match="replacement=True"):
        probs[1].multinomial(3)


def test_in_place_random_fills():
    w = dt.empty(1000)
    w.normal_(2.0, 0.5)
    assert abs(w.numpy().mean() - 2.0) < 0.1
    w.uniform_(-1, 1)
    assert w.numpy().min() >= -1 and w.numpy().max() < 1
    assert w._version[0] == 2


def test_attributes():
    x = dt.zeros(2, 3, 4)
    assert x.shape == (2, 3, 4) and x.size() == (2, 3, 4) and x.size(1) == 3
    assert x.ndim == 3 and x.dim() == 3 and x.numel() == 24 and len(x) == 2
    assert x.device == dt.device("cpu") and str(x.device) == "cpu"
    assert x.T.shape == (4, 3, 2) and x.mT.shape == (2, 4, 3)
    assert x.is_contiguous() and not x.T.is_contiguous() and x.T.contiguous().is_contiguous()


def test_conversions():
    x = dt.tensor([[1.5, 2.5], [3.5, 4.5]])
    assert x.tolist() == [[1.5, 2.5], [3.5, 4.5]]
    assert x[0, 1].item() == 2.5 and float(x[1, 0]) == 3.5
    assert x.long().dtype == dt.int64 and x.long().tolist() == [[1, 2], [3, 4]]
    assert x.double().dtype == dt.float64 and x.half().dtype == dt.float16
    assert x.int().dtype == dt.int32 and x.bool().dtype == dt.bool
    assert x.to(dt.float64).dtype == dt.float64 and x.to("cpu") is x
    assert x.to(dtype=dt.float64).dtype == dt.float64 and x.float() is x
    assert x.cpu() is x
    assert [row.tolist() for row in x] == [[1.5, 2.5], [3.5, 4.5]]
    assert np.asarray(x).dtype == np.float32


def test_dtype_cast_is_differentiable():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    y = x.double() * 3
    assert y.dtype == dt.float64
    y.sum().backward()
    assert x.grad.dtype == dt.float32
    np.testing.assert_allclose(x.grad.numpy(), [3, 3])


def test_detach_and_clone():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and d.grad_fn is None
    c = x.clone()
    (c * 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2, 2])
    with dt.no_grad():
        d.add_(1)
    assert x.detach().tolist() == [2.0, 3.0]  # detach shares memory


def test_requires_grad_rules():
    x = dt.zeros(2)
    assert x.requires_grad_() is x and x.requires_grad
    with pytest.raises(RuntimeError, match="floating-point"):
        dt.zeros(2, dtype=dt.int64).requires_grad_()
    with pytest.raises(RuntimeError, match="detach"):
        (x * 2).requires_grad = False


def test_numpy_refuses_tensor_that_requires_grad():
    with pytest.raises(RuntimeError, match=r"detach\(\)\.numpy\(\)"):
        dt.zeros(2, requires_grad=True).numpy()


def test_item_len_bool_errors_are_clear():
    with pytest.raises(ValueError, match="one element"):
        dt.zeros(2).item()
    with pytest.raises(TypeError, match="0-d"):
        len(dt.tensor(1.0))
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(dt.zeros(2))
    assert bool(dt.tensor([1.0]))


def test_cuda_without_gpu_names_the_extra():
    if dt.cuda_is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match=r"dtrain\[cuda\]"):
        dt.zeros(2).to("cuda")
    with pytest.raises(RuntimeError, match=r"dtrain\[cuda\]"):
        dt.zeros(2, device="cuda")


def test_bad_device_string():
    with pytest.raises(ValueError, match="'gpu'"):
        dt.device("gpu")


def test_repr_looks_like_pytorch():
    assert repr(dt.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(dt.tensor([0.1, 2.5])) == "tensor([0.1000, 2.5000])"
    assert repr(dt.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(dt.tensor([1.0], dtype=dt.float64)) == "tensor([1.], dtype=dtrain.float64)"
    assert repr(dt.ones(2, requires_grad=True)) == "tensor([1., 1.], requires_grad=True)"
    assert repr(dt.ones(2, requires_grad=True).sum()) == "tensor(2., grad_fn=<SumBackward0>)"
    assert repr(dt.zeros(2, 2)) == "tensor([[0., 0.],\n        [0., 0.]])"


def test_parameter_is_a_leaf_that_requires_grad():
    p = dt.nn.Parameter(dt.randn(2, 2))
    assert isinstance(p, dt.Tensor) and p.requires_grad and p.is_leaf
    assert repr(p).startswith("Parameter containing:\ntensor(")
    (p * 2).sum().backward()
    np.testing.assert_allclose(p.grad.numpy(), np.full((2, 2), 2.0))


def test_numpy_array_on_the_left_defers_to_tensor():
    out = np.ones(2, dtype=np.float32) + dt.ones(2)
    assert isinstance(out, dt.Tensor)


def test_python_floats_take_the_asked_dtype_without_a_float32_detour():
    # 0.05 in float32 is 0.0500000007...: asked for float64, the value must be exact
    assert dt.tensor(0.05, dtype=dt.float64).item() == 0.05
    assert dt.tensor([[0.1, 2.0]], dtype="float64").tolist() == [[0.1, 2.0]]
    assert dt.as_tensor([0.1], dtype=dt.float64).tolist() == [0.1]
    assert dt.tensor(0.05).dtype == dt.float32  # the default stays float32
    with pytest.raises(TypeError, match="numpy dtype <U1"):
        dt.tensor(["a"], dtype=dt.float32)


def test_deepcopy_copies_a_leaf_without_its_hooks_and_refuses_a_non_leaf():
    import copy

    p = dt.nn.Parameter(dt.ones(2))
    p.grad = dt.full((2,), 3.0)
    p.register_post_accumulate_grad_hook(lambda t: None)
    p.register_hook(lambda g: g)
    q = copy.deepcopy(p)
    assert type(q) is dt.nn.Parameter and q.requires_grad and q._hooks is None
    assert q.grad is not p.grad and q.grad.tolist() == [3.0, 3.0]
    q.detach().add_(1)  # its own memory and version counter
    assert p.tolist() == [1.0, 1.0] and p._version[0] == 0
    shared = [p, p]
    first, second = copy.deepcopy(shared)
    assert first is second  # the memo keeps one copy per tensor
    with pytest.raises(RuntimeError, match="graph leaves"):
        copy.deepcopy(p * 2)
