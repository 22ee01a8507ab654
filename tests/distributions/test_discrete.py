"""Categorical, OneHotCategorical and Bernoulli: probs/logits normalisation, log_prob,
entropy and moments against numpy (and PyTorch), sampling frequencies, gradients."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain as dt
import dtrain.distributions as D
from dtrain.autograd import gradcheck

PROBS = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.25, 0.0, 0.25]])
LOGITS = np.array([[1.0, -0.5, 0.2, 2.0], [-1.0, 0.0, 3.0, 0.5]])
P_BINARY = np.array([[0.1, 0.5, 0.9], [0.3, 0.0, 1.0]])


def log_softmax(x):
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_categorical_probs_are_normalised_and_logits_follow(make, close):
    d = D.Categorical(probs=make(PROBS * 3))  # unnormalised: divided by the row sums
    close(d.probs, PROBS)
    eps = np.finfo(np.float64).eps
    close(d.logits, np.log(np.clip(PROBS, eps, 1 - eps)))
    d = D.Categorical(logits=make(LOGITS + 5))  # shifted: normalised by logsumexp
    close(d.logits, log_softmax(LOGITS))
    close(d.probs, np.exp(log_softmax(LOGITS)))
    assert d.batch_shape == (2,) and d.event_shape == ()
    assert D.Categorical(make([0.5, 0.5])).batch_shape == ()


def test_categorical_log_prob_entropy_moments(make, close):
    d = D.Categorical(logits=make(LOGITS))
    value = np.array([3, 2])
    close(d.log_prob(make(value, dtype=dt.int64)), log_softmax(LOGITS)[[0, 1], value])
    # a sample shape in front broadcasts against the batch
    values = np.array([[0, 1], [2, 3], [1, 1]])
    close(d.log_prob(make(values, dtype=dt.int64)), log_softmax(LOGITS)[[0, 1], values])
    p = np.exp(log_softmax(LOGITS))
    close(d.entropy(), -(p * np.log(p)).sum(-1))
    # zero probabilities contribute 0 to the entropy, not nan
    expected = [-(PROBS[0] * np.log(PROBS[0])).sum(), -(0.5 * np.log(0.5) + 0.5 * np.log(0.25))]
    close(D.Categorical(make(PROBS)).entropy(), expected, atol=1e-12)
    close(d.mode, np.argmax(LOGITS, -1))
    assert np.isnan(d.mean.cpu().numpy()).all() and d.mean.shape == (2,)
    close(d.enumerate_support(), np.array([[0, 0], [1, 1], [2, 2], [3, 3]]))
    assert d.enumerate_support(expand=False).shape == (4, 1)


def test_categorical_matches_torch(torch, make, close):
    for kwargs in ({"probs": PROBS}, {"logits": LOGITS}):
        ours = D.Categorical(**{k: make(v) for k, v in kwargs.items()})
        theirs = torch.distributions.Categorical(**{k: torch.tensor(v) for k, v in kwargs.items()})
        close(ours.probs, theirs.probs)
        close(ours.logits, theirs.logits)
        value = np.array([[1, 3], [0, 1]])
        close(ours.log_prob(make(value, dtype=dt.int64)), theirs.log_prob(torch.tensor(value)))
        close(ours.entropy(), theirs.entropy())
        close(ours.mode, theirs.mode)


def test_categorical_sample_frequencies(make):
    d = D.Categorical(make(PROBS))
    dt.manual_seed(0)
    n = 20000
    s = d.sample((n,))
    assert s.shape == (n, 2) and s.dtype == dt.int64 and s.device == make(0.0).device
    s = s.cpu().numpy()
    for row in range(2):
        freq = np.bincount(s[:, row], minlength=4) / n
        p = PROBS[row]
        assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12), freq
    assert d.sample().shape == (2,)
    assert D.Categorical(make([0.2, 0.8])).sample((3, 5)).shape == (3, 5)


def test_categorical_log_prob_and_entropy_gradients(make):
    value = make([3, 0], dtype=dt.int64)
    leaf = make(LOGITS, requires_grad=True)
    assert gradcheck(lambda z: D.Categorical(logits=z).log_prob(value), [leaf])
    assert gradcheck(lambda z: D.Categorical(logits=z).entropy(), [leaf])
    positive = make(PROBS + 0.1, requires_grad=True)
    assert gradcheck(lambda p: D.Categorical(probs=p).log_prob(value), [positive])
    assert gradcheck(lambda p: D.Categorical(probs=p).entropy(), [positive])


def test_one_hot_categorical(make, close):
    d = D.OneHotCategorical(logits=make(LOGITS))
    assert d.batch_shape == (2,) and d.event_shape == (4,)
    dt.manual_seed(0)
    s = d.sample((500,))
    assert s.shape == (500, 2, 4) and s.dtype == dt.float64
    s_np = s.cpu().numpy()
    assert np.all(s_np.sum(-1) == 1) and set(np.unique(s_np)) <= {0.0, 1.0}
    close(d.log_prob(s), log_softmax(LOGITS)[[0, 1], s_np.argmax(-1)])
    close(d.mean, np.exp(log_softmax(LOGITS)))
    p = np.exp(log_softmax(LOGITS))
    close(d.variance, p * (1 - p))
    close(d.entropy(), -(p * np.log(p)).sum(-1))
    close(d.mode, np.eye(4)[np.argmax(LOGITS, -1)])
    assert d.enumerate_support().shape == (4, 2, 4)


def test_one_hot_categorical_matches_torch(torch, make, close):
    ours = D.OneHotCategorical(make(PROBS))
    theirs = torch.distributions.OneHotCategorical(torch.tensor(PROBS))
    value = np.eye(4)[[[3, 1], [0, 0]]]
    close(ours.log_prob(make(value)), theirs.log_prob(torch.tensor(value)))
    close(ours.entropy(), theirs.entropy())
    close(ours.variance, theirs.variance)
    close(ours.enumerate_support(), theirs.enumerate_support())


def bernoulli_logpmf(x, p):
    with np.errstate(divide="ignore"):
        return np.where(x == 1, np.log(p), np.log1p(-p))


def test_bernoulli_from_probs_and_logits(make, close):
    p = np.array([[0.1, 0.5, 0.9], [0.3, 0.2, 0.7]])
    x = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    for d in (D.Bernoulli(make(p)), D.Bernoulli(logits=make(np.log(p / (1 - p))))):
        assert d.batch_shape == (2, 3)
        close(d.probs, p)
        close(d.logits, np.log(p / (1 - p)), atol=1e-9)
        close(d.log_prob(make(x)), bernoulli_logpmf(x, p), atol=1e-9)
        close(d.entropy(), -(p * np.log(p) + (1 - p) * np.log1p(-p)), atol=1e-9)
        close(d.mean, p)
        close(d.variance, p * (1 - p))
    mode = D.Bernoulli(make([0.2, 0.5, 0.8])).mode.cpu().numpy()
    assert mode[0] == 0 and np.isnan(mode[1]) and mode[2] == 1
    assert D.Bernoulli(0.3).batch_shape == () and D.Bernoulli(0.3).probs.dtype == dt.float32
    close(D.Bernoulli(make([0.3])).enumerate_support(), [[0.0], [1.0]])


def test_bernoulli_matches_torch(torch, make, close):
    x = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    for kwargs in ({"probs": P_BINARY}, {"logits": LOGITS[:, :3]}):
        ours = D.Bernoulli(**{k: make(v) for k, v in kwargs.items()})
        theirs = torch.distributions.Bernoulli(**{k: torch.tensor(v) for k, v in kwargs.items()})
        close(ours.logits, theirs.logits)
        close(ours.probs, theirs.probs)
        close(ours.log_prob(make(x)), theirs.log_prob(torch.tensor(x)))
        close(ours.entropy(), theirs.entropy())
        close(ours.variance, theirs.variance)


def test_bernoulli_sample_frequencies(make):
    p = np.array([0.1, 0.5, 0.95])
    d = D.Bernoulli(make(p))
    dt.manual_seed(0)
    n = 20000
    s = d.sample((n,))
    assert s.shape == (n, 3) and s.dtype == dt.float64 and not s.requires_grad
    s = s.cpu().numpy()
    assert set(np.unique(s)) <= {0.0, 1.0}
    assert np.all(np.abs(s.mean(0) - p) <= 5 * np.sqrt(p * (1 - p) / n))


def test_bernoulli_gradients(make):
    x = make([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    logits = make(LOGITS[:, :3], requires_grad=True)
    assert gradcheck(lambda z: D.Bernoulli(logits=z).log_prob(x), [logits])
    assert gradcheck(lambda z: D.Bernoulli(logits=z).entropy(), [logits])
    probs = make([[0.1, 0.5, 0.9], [0.3, 0.2, 0.7]], requires_grad=True)
    assert gradcheck(lambda p: D.Bernoulli(p).log_prob(x), [probs])
    assert gradcheck(lambda p: D.Bernoulli(p).entropy(), [probs])


@pytest.mark.parametrize("cls", [D.Categorical, D.OneHotCategorical, D.Bernoulli])
def test_expand_keeps_the_given_parameter(cls, make):
    d = cls(logits=make([0.0, 1.0]))
    shape = (3,) + tuple(d.batch_shape)
    e = d.expand(shape)
    assert e.batch_shape == shape and e.event_shape == d.event_shape
    assert e.sample().shape == shape + tuple(d.event_shape)
