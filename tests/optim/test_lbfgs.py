"""``optim.LBFGS``: against a matrix-form BFGS reference, known minima (Rosenbrock, quadratics),
closure-call budgets, state dicts through ``dt.save``, an LSTM fitted as in PyTorch's
time_sequence_prediction example, and step by step against ``torch.optim.LBFGS`` where
PyTorch is installed."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.optim as optim
from dtrain._tensor.optim.line_search import cubic_interpolate, strong_wolfe

START = np.array([-1.5, 2.0])


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


def rosenbrock(x: Any) -> Any:
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def _spd(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n, n))
    return m @ m.T / n + np.diag(np.linspace(0.5, 3.0, n)), rng.standard_normal(n)


def _counting_closure(opt: Any, loss_fn: Any, x: Any, calls: list[int]) -> Any:
    def closure() -> Any:
        opt.zero_grad()
        loss = loss_fn(x)
        loss.backward()
        calls[0] += 1
        return loss

    return closure


def _quadratic(a: np.ndarray, b: np.ndarray) -> Any:
    a_t, b_t = dt.tensor(a), dt.tensor(b)
    return lambda x: 0.5 * (x * (a_t @ x)).sum() - (b_t * x).sum()


# ---- torch-free -------------------------------------------------------------------------
def _bfgs_direction(grad: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """-H g with H built by the matrix BFGS update from H0 = (s.y / y.y) I of the last pair."""
    n = grad.size
    if not pairs:
        return -grad
    s_last, y_last = pairs[-1]
    h = np.eye(n) * (s_last @ y_last) / (y_last @ y_last)
    for s, y in pairs:
        rho = 1.0 / (y @ s)
        v = np.eye(n) - rho * np.outer(y, s)
        h = v.T @ h @ v + rho * np.outer(s, s)
    return -h @ grad


def test_fixed_step_iterates_match_matrix_bfgs():
    a, b = _spd(5)
    lr, n_iter = 0.5, 6
    x = dt.tensor(np.zeros(5), requires_grad=True)
    opt = optim.LBFGS([x], lr=lr, max_iter=n_iter, history_size=3, tolerance_change=0)
    opt.step(_counting_closure(opt, _quadratic(a, b), x, [0]))

    ref = np.zeros(5)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    g = a @ ref - b
    for k in range(n_iter):
        d = _bfgs_direction(g, pairs[-3:])
        t = min(1.0, 1.0 / np.abs(g).sum()) * lr if k == 0 else lr
        new = ref + t * d
        new_g = a @ new - b
        pairs.append((new - ref, new_g - g))
        ref, g = new, new_g
    np.testing.assert_allclose(x.detach().numpy(), ref, rtol=1e-10, atol=1e-12)


def test_isotropic_quadratic_is_solved_exactly_on_the_second_iteration():
    # After one pair, H0 = s.y / y.y = 1 / c is the exact inverse Hessian.
    c, target = 4.0, np.array([1.0, -2.0, 3.0])
    x = dt.tensor(np.zeros(3), requires_grad=True)
    target_t = dt.tensor(target)
    opt = optim.LBFGS([x], max_iter=3)
    calls = [0]
    opt.step(_counting_closure(opt, lambda v: 0.5 * c * ((v - target_t) ** 2).sum(), x, calls))
    np.testing.assert_allclose(x.detach().numpy(), target, rtol=0, atol=1e-14)
    assert calls[0] == 3 and opt.state[x]["n_iter"] == 2  # the 3rd call finds a zero gradient


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_quadratic_reaches_the_exact_minimum(line_search_fn):
    a, b = _spd(6, seed=1)
    x = dt.tensor(np.zeros(6), requires_grad=True)
    opt = optim.LBFGS(
        [x], max_iter=30, line_search_fn=line_search_fn, tolerance_grad=1e-11, tolerance_change=0
    )
    opt.step(_counting_closure(opt, _quadratic(a, b), x, [0]))
    # The strong-Wolfe search stops zooming once its bracket is under 1e-9 wide (as PyTorch's).
    atol = 1e-10 if line_search_fn is None else 1e-7
    np.testing.assert_allclose(x.detach().numpy(), np.linalg.solve(a, b), rtol=0, atol=atol)
    assert opt.state[x]["n_iter"] <= 16


def test_rosenbrock_converges_with_strong_wolfe():
    x = dt.tensor(START.copy(), requires_grad=True)
    opt = optim.LBFGS([x], max_iter=100, line_search_fn="strong_wolfe", tolerance_change=1e-12)
    closure = _counting_closure(opt, rosenbrock, x, [0])
    first = opt.step(closure)
    assert float(first) == pytest.approx(rosenbrock(START))  # the loss before any update
    for _ in range(3):
        opt.step(closure)
    np.testing.assert_allclose(x.detach().numpy(), [1.0, 1.0], atol=1e-6)


def test_rosenbrock_fixed_step_decreases_the_loss():
    x = dt.tensor(START.copy(), requires_grad=True)
    opt = optim.LBFGS([x], lr=0.1, max_iter=10)
    closure = _counting_closure(opt, rosenbrock, x, [0])
    losses = [float(opt.step(closure)) for _ in range(6)]
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(("line_search_fn", "slack"), [(None, 0), ("strong_wolfe", 1)])
@pytest.mark.parametrize("max_eval", [3, 7])
def test_closure_calls_are_bounded_by_max_eval(line_search_fn, slack, max_eval):
    # As PyTorch, the line search may evaluate once past max_eval (its first trial always runs).
    x = dt.tensor(START.copy(), requires_grad=True)
    opt = optim.LBFGS([x], max_iter=100, max_eval=max_eval, line_search_fn=line_search_fn)
    for _ in range(4):
        calls = [0]
        opt.step(_counting_closure(opt, rosenbrock, x, calls))
        assert 2 <= calls[0] <= max_eval + slack
    assert opt.state[x]["func_evals"] >= 4 * 2


def test_default_max_eval_and_converged_start_returns_at_once():
    x = dt.tensor(np.ones(2), requires_grad=True)
    opt = optim.LBFGS([x], max_iter=8)
    assert opt.param_groups[0]["max_eval"] == 10
    calls = [0]
    opt.step(_counting_closure(opt, rosenbrock, x, calls))  # the gradient is 0 at (1, 1)
    assert calls[0] == 1 and opt.state[x]["n_iter"] == 0


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_state_dict_round_trip_through_save_continues_identically(tmp_path, line_search_fn):
    def make(x: Any) -> Any:
        return optim.LBFGS([x], lr=0.5, max_iter=4, history_size=3, line_search_fn=line_search_fn)

    x = dt.tensor(START.copy(), requires_grad=True)
    opt = make(x)
    for _ in range(2):
        opt.step(_counting_closure(opt, rosenbrock, x, [0]))
    state = opt.state_dict()["state"][0]
    assert set(state) == {
        "func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
        "prev_flat_grad", "prev_loss", "al",
    }  # fmt: skip
    assert len(state["old_dirs"]) == 3 and all(isinstance(v, dt.Tensor) for v in state["ro"])
    dt.save({"x": x.detach(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")

    saved = dt.load(tmp_path / "ckpt.pt")
    y = dt.tensor(saved["x"].numpy().copy(), requires_grad=True)
    resumed = make(y)
    resumed.load_state_dict(saved["opt"])
    for _ in range(3):
        a = opt.step(_counting_closure(opt, rosenbrock, x, [0]))
        b = resumed.step(_counting_closure(resumed, rosenbrock, y, [0]))
        assert float(a) == float(b)
        np.testing.assert_array_equal(x.detach().numpy(), y.detach().numpy())
    assert resumed.state[y]["n_iter"] == opt.state[x]["n_iter"]


def test_float32_parameters_keep_float32_state():
    x = dt.tensor(START.astype(np.float32), requires_grad=True)
    opt = optim.LBFGS([x], max_iter=5, line_search_fn="strong_wolfe")
    opt.step(_counting_closure(opt, rosenbrock, x, [0]))
    state = opt.state[x]
    assert x.dtype == dt.float32 and state["d"].dtype == dt.float32
    assert all(v.dtype == dt.float32 for v in state["old_dirs"] + state["ro"])


def test_load_state_dict_casts_the_history_to_the_parameter_dtype():
    x = dt.tensor(START.copy(), requires_grad=True)
    opt = optim.LBFGS([x], max_iter=3)
    opt.step(_counting_closure(opt, rosenbrock, x, [0]))
    y = dt.tensor(START.astype(np.float32), requires_grad=True)
    resumed = optim.LBFGS([y], max_iter=3)
    resumed.load_state_dict(opt.state_dict())
    state = resumed.state[y]
    assert len(state["old_dirs"]) == 1
    for name in ("old_dirs", "old_stps", "ro"):
        assert all(v.dtype == dt.float32 for v in state[name])
        assert all(v is not w for v, w in zip(state[name], opt.state[x][name]))
    resumed.step(_counting_closure(resumed, rosenbrock, y, [0]))
    assert y.dtype == dt.float32 and resumed.state[y]["n_iter"] == opt.state[x]["n_iter"] + 2


def test_several_parameters_and_one_without_grad():
    a, b = _spd(4, seed=2)
    p1 = dt.tensor(np.zeros(2), requires_grad=True)
    p2 = dt.tensor(np.zeros((1, 2)), requires_grad=True)
    unused = dt.tensor(np.full(3, 7.0), requires_grad=True)
    quad = _quadratic(a, b)
    opt = optim.LBFGS([p1, unused, p2], max_iter=40, tolerance_grad=1e-11, tolerance_change=0)

    def closure() -> Any:
        opt.zero_grad()
        loss = quad(dt.cat([p1, p2.reshape(-1)]))
        loss.backward()
        return loss

    opt.step(closure)
    got = np.concatenate([p1.detach().numpy(), p2.detach().numpy().ravel()])
    np.testing.assert_allclose(got, np.linalg.solve(a, b), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(unused.detach().numpy(), np.full(3, 7.0))


def test_on_test_device_matches_cpu(test_device):
    def run(device: str) -> np.ndarray:
        x = dt.tensor(START.copy(), requires_grad=True, device=device)
        opt = optim.LBFGS([x], max_iter=10, history_size=5, line_search_fn="strong_wolfe")
        for _ in range(2):
            opt.step(_counting_closure(opt, rosenbrock, x, [0]))
        assert opt.state[x]["d"].device == x.device
        return x.detach().cpu().numpy()

    np.testing.assert_allclose(run(test_device), run("cpu"), rtol=1e-10)


class _Sequence(nn.Module):
    """PyTorch's time_sequence_prediction model, smaller: two LSTM cells and a linear head."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.lstm1 = nn.LSTMCell(1, hidden)
        self.lstm2 = nn.LSTMCell(hidden, hidden)
        self.linear = nn.Linear(hidden, 1)

    def forward(self, x: Any) -> Any:
        shape = (x.shape[0], self.hidden)
        h, c, h2, c2 = (dt.zeros(*shape, dtype=dt.float64) for _ in range(4))
        outputs = []
        for x_t in x.split(1, dim=1):
            h, c = self.lstm1(x_t, (h, c))
            h2, c2 = self.lstm2(h, (h2, c2))
            outputs.append(self.linear(h2))
        return dt.cat(outputs, dim=1)


def _sine_waves() -> np.ndarray:
    rng = np.random.default_rng(2)
    t = np.arange(16)[None, :] + rng.integers(-4, 4, size=(3, 1))
    return np.sin(t / 3.0).astype(np.float64)


def _fit_sequence(model: Any, make_tensor: Any, opt_cls: Any, mse: Any, steps: int) -> list:
    data = _sine_waves()
    x, target = make_tensor(data[:, :-1]), make_tensor(data[:, 1:])
    opt = opt_cls(model.parameters(), lr=0.8, max_iter=6)

    def closure() -> Any:
        opt.zero_grad()
        loss = mse(model(x), target)
        loss.backward()
        return loss

    return [opt.step(closure).item() for _ in range(steps)]


def test_lstm_time_sequence_loss_decreases():
    dt.manual_seed(0)
    model = _Sequence(10).double()
    losses = _fit_sequence(model, dt.tensor, optim.LBFGS, nn.MSELoss(), steps=4)
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.2 * losses[0]


def test_errors():
    x = dt.tensor(START.copy(), requires_grad=True)
    y = dt.tensor(START.copy(), requires_grad=True)
    with pytest.raises(ValueError, match="parameter groups"):
        optim.LBFGS([{"params": [x]}, {"params": [y], "lr": 0.1}])
    opt = optim.LBFGS([x])
    with pytest.raises(ValueError, match="parameter groups"):
        opt.add_param_group({"params": [y]})
    with pytest.raises(ValueError, match="'strong_wolfe'"):
        optim.LBFGS([x], line_search_fn="backtracking")
    with pytest.raises(ValueError, match="learning rate"):
        optim.LBFGS([x], lr=-1)


# ---- the line search --------------------------------------------------------------------
def _wiggly(x: np.ndarray) -> tuple[float, np.ndarray]:
    """A bowl with ripples: along a line it has many local minima, so the line search
    brackets, zooms and bisects. Returns the loss and its gradient."""
    return float(np.sum(np.sin(3 * x) + 0.1 * x**2)), 3 * np.cos(3 * x) + 0.2 * x


def _line_search_cases(n: int = 40) -> list[tuple[np.ndarray, float]]:
    """Starts and first trial steps from 1e-3 (extrapolation) to 30 (zooming in)."""
    rng = np.random.default_rng(5)
    return [(rng.standard_normal(3), 10.0 ** rng.uniform(-3, 1.5)) for _ in range(n)]


def test_cubic_interpolate_finds_the_minimum_of_a_cubic():
    def p(x: float) -> float:
        return x**3 - 3 * x**2 + 1  # local minimum at x = 2

    def dp(x: float) -> float:
        return 3 * x**2 - 6 * x

    assert cubic_interpolate(0.5, p(0.5), dp(0.5), 3.0, p(3.0), dp(3.0)) == pytest.approx(2.0)
    assert cubic_interpolate(3.0, p(3.0), dp(3.0), 0.5, p(0.5), dp(0.5)) == pytest.approx(2.0)
    assert cubic_interpolate(0.5, p(0.5), dp(0.5), 3.0, p(3.0), dp(3.0), (2.5, 9.0)) == 2.5
    # No real minimiser (d1^2 < g1 g2): the middle of the bounds.
    assert cubic_interpolate(0.0, 0.0, 1.0, 1.0, 0.9, 1.0, (0.0, 4.0)) == 2.0


#: (c1, c2): the defaults, an almost exact search, and a loose one that bisects often.
WOLFE_CONSTANTS = [(1e-4, 0.9), (1e-4, 0.1), (0.3, 0.4)]


@pytest.mark.parametrize(("c1", "c2"), WOLFE_CONSTANTS[:2])
def test_strong_wolfe_step_satisfies_the_conditions(c1, c2):
    # (With c1 = 0.3 the zoom can shrink its bracket below tolerance_change first, as
    # PyTorch's does, and return the best point it has.)
    satisfied = 0
    for x, t0 in _line_search_cases():
        f, g = _wiggly(x)
        d = -g
        gtd = g @ d
        loss, grad, t, evals = strong_wolfe(
            lambda x, t, d: _wiggly(x + t * d), x, t0, d, f, g, gtd, c1=c1, c2=c2
        )
        want_loss, want_grad = _wiggly(x + t * d)
        assert loss == want_loss
        np.testing.assert_array_equal(grad, want_grad)
        assert loss < f  # never worse than the start
        assert 1 <= evals <= 26  # max_ls=25 after the first trial
        if evals < 26:  # not cut short
            assert loss <= f + c1 * t * gtd  # sufficient decrease
            assert abs(grad @ d) <= -c2 * gtd  # curvature
            satisfied += 1
    assert satisfied >= 35


def test_strong_wolfe_stops_at_max_ls():
    calls = [0]

    def obj(x: Any, t: Any, d: Any) -> tuple[float, Any]:
        calls[0] += 1
        return _wiggly(x + t * d)

    x = np.array([1.0, -2.0, 0.5])
    f, g = _wiggly(x)
    _, _, t, evals = strong_wolfe(obj, x, 1e-6, -g, f, g, -(g @ g), max_ls=3)
    assert evals == calls[0] == 4  # the first trial, then max_ls more (as PyTorch)
    assert 0 < t < 1


@pytest.mark.parametrize(("c1", "c2"), WOLFE_CONSTANTS)
def test_strong_wolfe_matches_torch(torch, c1, c2):
    from torch.optim.lbfgs import _strong_wolfe

    zooms = other_counts = 0
    for x, t0 in _line_search_cases(100):
        f, g = _wiggly(x)
        ours = strong_wolfe(
            lambda x, t, d: _wiggly(x + t * d), x, t0, -g, f, g, g @ -g, c1=c1, c2=c2
        )

        def torch_obj(x: Any, t: Any, d: Any) -> tuple[float, Any]:
            loss, grad = _wiggly((x + t * d).numpy())  # the same numbers as ours get
            return loss, torch.tensor(grad)

        xt, gt = torch.tensor(x), torch.tensor(g)
        theirs = _strong_wolfe(torch_obj, xt, t0, -gt, f, gt, gt @ -gt, c1, c2)
        # numpy's and PyTorch's dot products round differently; once a zoom has shrunk its
        # bracket to ~1e-9 that may decide whether it stops one evaluation earlier.
        other_counts += ours[3] != theirs[3]
        assert float(ours[2]) == pytest.approx(float(theirs[2]), rel=1e-8)
        assert ours[0] == pytest.approx(theirs[0], rel=1e-9)
        np.testing.assert_allclose(ours[1], theirs[1].numpy(), rtol=1e-7, atol=1e-9)
        zooms += ours[3] > 3
    assert zooms >= 5  # the zoom phase ran
    assert other_counts <= 2


# ---- against torch.optim.LBFGS ----------------------------------------------------------
def _run_both(torch: Any, dtype: str, loss_fn: Any, x0: np.ndarray, steps: int, **options):
    xd = dt.tensor(x0.astype(dtype), requires_grad=True)
    xt = torch.tensor(x0.astype(dtype), requires_grad=True)
    od, ot = optim.LBFGS([xd], **options), torch.optim.LBFGS([xt], **options)
    for _ in range(steps):
        calls_d, calls_t = [0], [0]
        loss_d = od.step(_counting_closure(od, loss_fn, xd, calls_d))
        loss_t = ot.step(_counting_closure(ot, loss_fn, xt, calls_t))
        yield xd.detach().numpy(), xt.detach().numpy(), float(loss_d), loss_t.item()
        assert calls_d == calls_t
        sd, st = od.state[xd], ot.state[xt]
        assert (sd["n_iter"], sd["func_evals"]) == (st["n_iter"], st["func_evals"])
        assert len(sd["old_dirs"]) == len(st["old_dirs"])


@pytest.mark.parametrize(
    "options",
    [
        {"lr": 0.1, "max_iter": 5, "history_size": 4},
        {"lr": 1, "max_iter": 5, "history_size": 4, "line_search_fn": "strong_wolfe"},
        {"max_iter": 20, "max_eval": 9, "line_search_fn": "strong_wolfe"},
    ],
    ids=["fixed", "wolfe", "wolfe-max-eval"],
)
def test_rosenbrock_matches_torch_step_by_step(torch, options):
    for ours, theirs, loss_d, loss_t in _run_both(
        torch, "float64", rosenbrock, START, 8, **options
    ):
        np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-9)
        assert loss_d == pytest.approx(loss_t, rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_float32_quadratic_matches_torch(torch, line_search_fn):
    a, b = _spd(8, seed=3)
    x0 = np.random.default_rng(4).standard_normal(8)
    ours_t = (torch.tensor(a.astype(np.float32)), torch.tensor(b.astype(np.float32)))
    ours = _quadratic(a.astype(np.float32), b.astype(np.float32))

    def loss_fn(x: Any) -> Any:
        if isinstance(x, dt.Tensor):
            return ours(x)
        return 0.5 * (x * (ours_t[0] @ x)).sum() - (ours_t[1] * x).sum()

    # Few iterations: near the minimum, float32 round-off decides the line search's tests.
    run = _run_both(torch, "float32", loss_fn, x0, 2, max_iter=3, line_search_fn=line_search_fn)
    for got, want, loss_d, loss_t in run:
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert loss_d == pytest.approx(loss_t, rel=1e-5)


def test_lstm_time_sequence_matches_torch(torch):
    dt.manual_seed(0)
    ours = _Sequence(10).double()
    torch.manual_seed(0)

    class Theirs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm1 = torch.nn.LSTMCell(1, 10)
            self.lstm2 = torch.nn.LSTMCell(10, 10)
            self.linear = torch.nn.Linear(10, 1)

        def forward(self, x: Any) -> Any:
            h, c, h2, c2 = (torch.zeros(x.shape[0], 10, dtype=torch.double) for _ in range(4))
            outputs = []
            for x_t in x.split(1, dim=1):
                h, c = self.lstm1(x_t, (h, c))
                h2, c2 = self.lstm2(h, (h2, c2))
                outputs.append(self.linear(h2))
            return torch.cat(outputs, dim=1)

    theirs = Theirs().double()
    ours.load_state_dict(
        {k: dt.tensor(v.detach().numpy().copy()) for k, v in theirs.state_dict().items()}
    )
    got = _fit_sequence(ours, dt.tensor, optim.LBFGS, nn.MSELoss(), steps=3)
    want = _fit_sequence(theirs, torch.tensor, torch.optim.LBFGS, torch.nn.MSELoss(), steps=3)
    np.testing.assert_allclose(got, want, rtol=1e-7)
