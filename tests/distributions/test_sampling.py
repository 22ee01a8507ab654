"""Sampling edge cases and their costs: float16 draws never reach the top of their range
(a masked category, an infinite Exponential/Laplace draw), Categorical's inverse-CDF
search against a numpy reference, no host reads with ``validate_args=False``
(Bernoulli.sample, OneHotCategorical, Categorical.log_prob), out-of-range actions,
masked ``-inf`` logits, float16 parameters and LogNormal at small scales."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.distributions as D
from dtrain._tensor.distributions import categorical
from dtrain.autograd import gradcheck

INF = float("inf")
MASKED = np.array([[0.5, -INF, 1.0, -INF], [-INF, 2.0, 0.0, 1.0]])


def log_softmax(x):
    with np.errstate(invalid="ignore"):
        return x - np.log(np.exp(x).sum(-1, keepdims=True))


def host_reads(counts) -> dict:
    return {name: n for name, n in counts.items() if name.startswith("host read")}


# ---- float16: draws stay below the top of [0, 1) ---------------------------------------


def test_float16_categorical_never_draws_a_masked_category(make):
    dt.manual_seed(0)
    logits = make([[0.0, 0.0, -INF], [-INF, 0.0, -INF], [-INF, -INF, 0.0]], dtype=dt.float16)
    draws = D.Categorical(logits=logits).sample((400_000,)).cpu().numpy()
    assert draws.dtype == np.int64
    assert set(np.unique(draws[:, 0])) == {0, 1}  # before: ~1 in 4000 drew the masked 2
    assert (draws[:, 1] == 1).all() and (draws[:, 2] == 2).all()
    assert abs((draws[:, 0] == 0).mean() - 0.5) < 0.005


@pytest.mark.parametrize("cls", [D.Exponential, D.Laplace])
def test_float16_exponential_and_laplace_draws_are_finite(cls, make):
    dt.manual_seed(1)
    param = make([1.0], dtype=dt.float16)
    dist = cls(param) if cls is D.Exponential else cls(make([0.0], dtype=dt.float16), param)
    draws = dist.sample((1_000_000,))
    assert draws.dtype == dt.float16
    assert dt.isfinite(draws).all().item(), int(dt.isinf(draws).sum().item())


def test_float16_uniform_draws_stay_below_high(make):
    dt.manual_seed(2)
    dist = D.Uniform(make([0.0], dtype=dt.float16), make([1.0], dtype=dt.float16))
    draws = dist.sample((1_000_000,)).cpu().numpy()
    assert draws.min() >= 0 and draws.max() < 1


# ---- Categorical: inverse CDF by binary search -----------------------------------------


def _reference_draws(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The category of each uniform ``u`` (shape ``(n, rows)``) by a per-row search."""
    rows = probs.reshape(-1, probs.shape[-1])
    out = np.empty(u.shape, dtype=np.int64)
    for r, row in enumerate(rows):
        cdf = np.cumsum(row.astype(np.float64))
        out[:, r] = np.searchsorted(cdf / cdf[-1], u[:, r], side="right")
    return out


def test_categorical_draws_match_a_per_row_search(make, monkeypatch):
    probs = np.array([[0.0, 0.25, 0.0, 0.5, 0.25, 0.0], [0.5, 0.0, 0.0, 0.0, 0.0, 0.5]])
    # the edges of every interval, 0, and the largest draws below 1
    top = np.nextafter(1.0, 0.0)
    u = np.array([[0.0, 0.0], [0.25, 0.5], [0.2499, 0.4999], [0.75, 0.75], [0.9999, top]])
    drawn = []

    def fixed(shape, like, dtype=None):
        drawn.append(tuple(shape))
        return dt.tensor(u, dtype=dtype, device=like.device)

    monkeypatch.setattr(categorical, "standard_uniform", fixed)
    got = D.Categorical(make(probs)).sample((5,)).cpu().numpy()
    assert drawn == [(5, 2)]
    expected = _reference_draws(probs, u)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(expected, [[1, 0], [3, 5], [1, 0], [4, 5], [4, 5]])
    assert probs[np.arange(2), got].min() > 0  # a zero-probability category never comes out


def test_categorical_sample_frequencies_over_many_categories(make):
    rng = np.random.default_rng(0)
    probs = rng.random((3, 200)) * (rng.random((3, 200)) < 0.5)  # about half of them zero
    dt.manual_seed(3)
    n = 100_000
    draws = D.Categorical(make(probs)).sample((n,)).cpu().numpy()
    assert draws.shape == (n, 3)
    p = probs / probs.sum(-1, keepdims=True)
    for row in range(3):
        freq = np.bincount(draws[:, row], minlength=200) / n
        assert (freq[p[row] == 0] == 0).all()
        assert np.all(np.abs(freq - p[row]) <= 5 * np.sqrt(p[row] * (1 - p[row]) / n) + 1e-12)


def test_categorical_sample_shapes_for_a_large_vocabulary(make):
    logits = make(np.random.default_rng(1).normal(size=(2, 3, 5000)), dtype=dt.float32)
    dist = D.Categorical(logits=logits)
    assert dist.sample().shape == (2, 3)
    draws = dist.sample((4, 2))
    assert draws.shape == (4, 2, 2, 3) and draws.dtype == dt.int64
    assert (draws >= 0).all().item() and (draws < 5000).all().item()
    assert D.Categorical(make(np.ones((0, 4)))).sample((3,)).shape == (3, 0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # 0 / 0 when normalising [0, 0]
@pytest.mark.parametrize("probs", [[0.0, 0.0], [0.5, float("nan")], [-0.5, 1.5]])
def test_categorical_sample_of_invalid_probs_raises_on_the_cpu(probs):
    dist = D.Categorical(dt.tensor(probs), validate_args=False)
    with pytest.raises(RuntimeError, match="finite, non-negative"):
        dist.sample()


# ---- no host reads with validate_args=False --------------------------------------------


def test_bernoulli_sample_reads_nothing_back_to_the_host(emulator):
    probs = dt.rand(64, device="cuda")
    dist = D.Bernoulli(probs, validate_args=False)
    with emulator.counting() as counts:
        draws = dist.sample((100,))
    assert host_reads(counts) == {}
    assert draws.shape == (100, 64) and draws.dtype == dt.float32
    on_device = D.Bernoulli(logits=dt.zeros(3, device="cuda"), validate_args=False)
    with emulator.counting() as counts:
        on_device.sample()
    assert host_reads(counts) == {}


@pytest.mark.parametrize("dtype", [dt.float16, dt.float32, dt.float64])
def test_bernoulli_sample_frequencies_and_certain_outcomes(dtype, make):
    dt.manual_seed(4)
    dist = D.Bernoulli(make([0.0, 0.3, 0.9, 1.0], dtype=dtype))
    draws = dist.sample((50_000,))
    assert draws.dtype == dtype
    mean = draws.cpu().numpy().astype(np.float64).mean(0)
    assert mean[0] == 0 and mean[3] == 1
    np.testing.assert_allclose(mean[1:3], [0.3, 0.9], atol=0.01)


def test_one_hot_categorical_passes_validate_args_on(emulator):
    bad = dt.tensor([-0.5, 1.5], device="cuda")
    with emulator.counting() as counts:
        dist = D.OneHotCategorical(bad, validate_args=False)  # not checked, as documented
    assert host_reads(counts) == {}
    assert dist._categorical._validate_args is False
    with pytest.raises(ValueError, match="Expected parameter probs"):
        D.OneHotCategorical(dt.tensor([-0.5, 1.5]), validate_args=True)
    assert D.OneHotCategorical(dt.tensor([0.5, 0.5]))._categorical._validate_args is True


# ---- Categorical.log_prob of an action outside [0, K) ----------------------------------


@pytest.mark.parametrize("action", [-1, 3, 7])
def test_out_of_range_action_raises_on_the_cpu_without_validation(action):
    dist = D.Categorical(dt.tensor([0.3, 0.3, 0.4]), validate_args=False)
    with pytest.raises(RuntimeError, match=f"index {action} is out of bounds"):
        dist.log_prob(dt.tensor(action))
    with pytest.raises(RuntimeError, match="out of bounds"):
        dist.log_prob(dt.tensor([[0, 1], [2, action]]))
    np.testing.assert_allclose(dist.log_prob(dt.tensor([2, 0])).numpy(), np.log([0.4, 0.3]))


def test_out_of_range_action_raises_as_torch(torch):
    theirs = torch.distributions.Categorical(torch.tensor([0.3, 0.3, 0.4]), validate_args=False)
    ours = D.Categorical(dt.tensor([0.3, 0.3, 0.4]), validate_args=False)
    for action in (-1, 3):
        with pytest.raises(RuntimeError, match="out of bounds"):
            theirs.log_prob(torch.tensor(action))
        with pytest.raises(RuntimeError, match="out of bounds"):
            ours.log_prob(dt.tensor(action))


def test_out_of_range_action_is_nan_on_cuda_without_a_host_read(emulator):
    logits = dt.tensor([[0.0, 1.0, 2.0]] * 4, device="cuda", requires_grad=True)
    dist = D.Categorical(logits=logits, validate_args=False)
    actions = dt.tensor([-1, 0, 2, 3], device="cuda")
    with emulator.counting() as counts:
        lp = dist.log_prob(actions)
    assert host_reads(counts) == {}
    values = lp.detach().cpu().numpy()
    expected = log_softmax(np.array([0.0, 1.0, 2.0]))
    assert np.isnan(values[[0, 3]]).all()  # not another category's log-probability
    np.testing.assert_allclose(values[[1, 2]], expected[[0, 2]], rtol=1e-6)
    lp[1:3].sum().backward()
    assert np.isfinite(logits.grad.cpu().numpy()).all()


# ---- masked -inf logits (RL action masks) ----------------------------------------------


def test_masked_logits_log_prob_entropy_and_gradients(make, close):
    dist = D.Categorical(logits=make(MASKED))
    expected = log_softmax(MASKED)
    close(dist.logits, expected)
    close(dist.log_prob(make([2, 1], dtype=dt.int64)), expected[[0, 1], [2, 1]])
    close(dist.log_prob(make([1, 0], dtype=dt.int64)), [-INF, -INF])
    p = np.exp(expected)
    close(dist.entropy(), -(p * np.where(p > 0, expected, 0)).sum(-1))
    # gradients by finite differences: x + mask, a finite x under a constant 0 / -inf mask
    free = np.isfinite(MASKED)
    mask = make(np.where(free, 0.0, -INF))

    def masked(x):
        d = D.Categorical(logits=x + mask)
        return d.entropy().sum() + d.log_prob(make([2, 1], dtype=dt.int64)).sum()

    assert gradcheck(masked, [make(np.where(free, MASKED, 0.3), requires_grad=True)])
    leaf = make(MASKED, requires_grad=True)
    d = D.Categorical(logits=leaf)
    (d.entropy().sum() + d.log_prob(make([2, 1], dtype=dt.int64)).sum()).backward()
    grad = leaf.grad.cpu().numpy()
    assert (grad[~free] == 0).all() and np.isfinite(grad).all()


def test_masked_logits_match_torch(torch, make, close):
    ours = make(MASKED, requires_grad=True)
    theirs = torch.tensor(MASKED, requires_grad=True)
    d, t = D.Categorical(logits=ours), torch.distributions.Categorical(logits=theirs)
    close(d.entropy(), t.entropy())
    close(d.log_prob(make([2, 3], dtype=dt.int64)), t.log_prob(torch.tensor([2, 3])))
    (d.entropy().sum() + d.log_prob(make([2, 3], dtype=dt.int64)).sum()).backward()
    (t.entropy().sum() + t.log_prob(torch.tensor([2, 3])).sum()).backward()
    close(ours.grad, theirs.grad, atol=1e-12)


# ---- float16 parameters ----------------------------------------------------------------


def test_float16_categorical_and_bernoulli_keep_the_dtype_and_values(make):
    logits = np.array([[1.0, -0.5, 0.2, 2.0], [-1.0, 0.0, 3.0, -INF]])
    d = D.Categorical(logits=make(logits, dtype=dt.float16))
    for value in (d.probs, d.logits, d.entropy(), d.log_prob(make([3, 2], dtype=dt.int64))):
        assert value.dtype == dt.float16
    expected = log_softmax(logits)
    np.testing.assert_allclose(d.logits.cpu().numpy(), expected, rtol=2e-3, atol=2e-3)
    p = np.exp(expected)
    entropy = -(p * np.where(p > 0, expected, 0)).sum(-1)
    np.testing.assert_allclose(d.entropy().cpu().numpy(), entropy, rtol=5e-3)
    b = D.Bernoulli(logits=make([-2.0, 0.0, 3.0], dtype=dt.float16))
    assert b.sample((5,)).dtype == dt.float16 and b.log_prob(b.sample()).dtype == dt.float16


def test_bernoulli_log_prob_is_exact_at_large_logits(make, close):
    logits = make([25.0, -40.0, 0.0], requires_grad=True)
    dist = D.Bernoulli(logits=logits)
    lp = dist.log_prob(make([1.0, 0.0, 1.0]))
    # -log(1 + e^-|x|): -1.4e-11 at 25, not 0 (softplus's threshold of 20 rounded it away),
    # and -4.2e-18 at -40 (PyTorch: -0.0)
    close(lp, -np.log1p(np.exp(-np.array([25.0, 40.0, 0.0]))), atol=0, rtol=1e-12)
    lp.sum().backward()
    # (softplus's backward takes sigmoid in its tanh form: good to 1e-16 absolute)
    close(logits.grad, [1 / (1 + np.exp(25.0)), -1 / (1 + np.exp(40.0)), 0.5], atol=1e-16)


# ---- LogNormal at small scales ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [dt.float32, dt.float64])
def test_lognormal_variance_at_small_scales(dtype, make):
    loc, scale = np.array([0.0, 1.0, -0.5]), np.array([1e-4, 1e-3, 1e-6])
    dist = D.LogNormal(make(loc, dtype=dtype), make(scale, dtype=dtype))
    expected = np.expm1(scale**2) * np.exp(2 * loc + scale**2)  # 1e-8, 7.4e-6, 3.7e-13
    got = dist.variance.cpu().numpy()
    assert got.dtype == np.dtype(dtype.name)
    np.testing.assert_allclose(got, expected, rtol=1e-5)  # exp(s^2) - 1 gave 0 and 7 % off
    np.testing.assert_allclose(dist.stddev.cpu().numpy(), np.sqrt(expected), rtol=1e-5)


def test_lognormal_variance_gradient_at_small_scales(make):
    loc, scale = make([0.3, -1.0], requires_grad=True), make([1e-3, 0.5], requires_grad=True)
    assert gradcheck(lambda m, s: D.LogNormal(m, s).variance, [loc, scale])


def test_lognormal_small_scale_matches_torch(torch, make):
    loc, scale = np.array([0.0, 1.0]), np.array([1e-4, 1e-3])
    ours = D.LogNormal(make(loc, dtype=dt.float32), make(scale, dtype=dt.float32))
    theirs = torch.distributions.LogNormal(
        torch.tensor(loc, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32)
    )
    np.testing.assert_allclose(ours.variance.cpu().numpy(), theirs.variance.numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours.mean.cpu().numpy(), theirs.mean.numpy(), rtol=1e-6)


# ---- Poisson and binomial samplers: each element pays only for its own method ----------


def test_poisson_binomial_draw_each_branch_only_where_it_applies(make, monkeypatch):
    """Inversion for the small means, rejection for the large ones, each drawing uniforms
    only for its own elements (the rejection's first round: 2 proposals, 2 uniforms each),
    and the draws land in their own batch entries."""
    from dtrain._tensor.distributions import discrete_sampling

    drawn = []
    real = discrete_sampling._uniform

    def uniform(shape, device):
        drawn.append(int(np.prod(shape)))
        return real(shape, device)

    monkeypatch.setattr(discrete_sampling, "_uniform", uniform)
    rate = np.array([0.5, 50.0, 3.0, 200.0])
    dt.manual_seed(0)
    n = 20_000
    draws = D.Poisson(make(rate)).sample((n,)).cpu().numpy()
    # inversion: n * 2 uniforms; rejection: 2 * 2 per element, then 2 * 8 per leftover
    # (< 2.5% of them); drawing both methods for every element took 36 per element
    assert sum(drawn) < n * (2 + 2 * (4 + 16 * 0.05))
    assert np.all(np.abs(draws.mean(0) - rate) < 5 * np.sqrt(rate / n))
    assert np.all(np.abs(draws.var(0) / rate - 1) < 5 * np.sqrt(2 / n))
    drawn.clear()
    count, probs = np.array([5.0, 200.0, 40.0, 30.0]), np.array([0.3, 0.4, 0.1, 0.9])
    draws = D.Binomial(make(count), make(probs)).sample((n,)).cpu().numpy()
    assert sum(drawn) < n * (2 + 2 * (4 + 16 * 0.05))
    mean, var = count * probs, count * probs * (1 - probs)
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * np.sqrt(var / n))
    assert (draws <= count).all() and (draws >= 0).all()


def test_inversion_stops_once_every_draw_is_settled(monkeypatch):
    """Stopping early gives exactly the counts of all 64 steps (numpy reference)."""
    from dtrain._tensor.distributions import discrete_sampling

    rng = np.random.default_rng(0)
    u = rng.random(10_000)
    monkeypatch.setattr(discrete_sampling, "_uniform", lambda shape, device: u.reshape(shape))
    lam = np.full(10_000, 2.0)
    steps = []

    def ratio(k):
        steps.append(k)
        return lam / (k + 1)

    counts = discrete_sampling._inversion(np.exp(-lam), ratio, "cpu")
    ks = np.arange(64.0)
    cdf = np.cumsum(np.exp(ks * np.log(2.0) - 2.0 - np.vectorize(math.lgamma)(ks + 1)))
    np.testing.assert_array_equal(counts, (cdf[None, :] <= u[:, None]).sum(1))
    assert len(steps) < 24  # the largest of 10^4 Poisson(2) draws is ~10
