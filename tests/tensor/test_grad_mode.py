"""Grad modes as PyTorch spells them: bare decorators, ``inference_mode``, ``Variable``."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import dtrain as dt
from dtrain.autograd import Variable


def test_no_grad_and_enable_grad_work_as_bare_decorators():
    @dt.no_grad
    def doubled(x):
        return x * 2

    @dt.enable_grad
    def tripled(x):
        return x * 3

    x = dt.ones(2, requires_grad=True)
    assert doubled.__name__ == "doubled"
    assert not doubled(x).requires_grad
    with dt.no_grad():
        assert tripled(x).requires_grad
    assert dt.is_grad_enabled()
    with pytest.raises(TypeError, match="a function when used as a bare decorator"):
        dt.no_grad(3)


def test_inference_mode_records_nothing_and_restores():
    x = dt.ones(2, requires_grad=True)
    with dt.inference_mode():
        assert dt.is_inference_mode_enabled()
        assert not (x * 2).requires_grad
    assert not dt.is_inference_mode_enabled()
    assert (x * 2).requires_grad
    with dt.inference_mode(False):
        assert (x * 2).requires_grad  # False changes nothing, as PyTorch's


def test_inference_mode_decorates_with_and_without_parentheses():
    @dt.inference_mode
    def bare(x):
        return x * 2

    @dt.inference_mode()
    def called(x):
        return x * 2

    @dt.inference_mode(mode=False)
    def off(x):
        return x * 2

    x = dt.ones(2, requires_grad=True)
    assert not bare(x).requires_grad and not called(x).requires_grad
    assert off(x).requires_grad
    assert bare.__name__ == "bare"


def test_inference_mode_is_per_thread():
    seen = []
    with dt.inference_mode():
        worker = threading.Thread(target=lambda: seen.append(dt.is_grad_enabled()))
        worker.start()
        worker.join()
    assert seen == [True]


def test_variable_is_a_tensor_that_may_carry_a_gradient():
    data = dt.tensor([1.0, 2.0])
    v = Variable(data, requires_grad=True)
    assert isinstance(v, dt.Tensor) and v.requires_grad and v.is_leaf
    assert not data.requires_grad  # the wrapped tensor is left alone, memory shared
    (v * v).sum().backward()
    np.testing.assert_allclose(v.grad.numpy(), [2.0, 4.0])
    history = dt.ones(2, requires_grad=True) * 2
    assert not Variable(history).requires_grad  # detached, as PyTorch's
    with pytest.raises(ValueError, match="no_grad"):
        Variable(data, volatile=True)
    with pytest.raises(TypeError, match=r"dtrain\.tensor"):
        Variable([1.0, 2.0])


def test_inference_mode_false_turns_recording_back_on_as_torch():
    x = dt.ones(2, requires_grad=True)
    for outer in (dt.no_grad, dt.inference_mode):
        with outer():
            with dt.inference_mode(False):
                assert (x * 2).requires_grad and not dt.is_inference_mode_enabled()
            assert not dt.is_grad_enabled()


def test_decorated_generators_run_their_body_in_the_mode_at_every_resume():
    seen = []

    @dt.no_grad()
    def steps(n):
        for _ in range(n):
            sent = yield dt.is_grad_enabled()
            seen.append((sent, dt.is_grad_enabled()))
        return "done"

    @dt.inference_mode
    def inferring():
        yield dt.is_inference_mode_enabled()

    walker = steps(2)
    assert next(walker) is False
    assert dt.is_grad_enabled()  # the caller's mode between resumes
    assert walker.send("a") is False
    with pytest.raises(StopIteration) as finished:
        walker.send("b")
    assert finished.value.value == "done"
    assert seen == [("a", False), ("b", False)]
    assert list(inferring()) == [True] and not dt.is_inference_mode_enabled()
    closing = steps(3)
    next(closing)
    closing.close()
    assert dt.is_grad_enabled()
