"""The optimizers' and clipping's cached kernel arguments (``multi_tensor.CachedLists``, the
optimizers' per-group plans): the persistent rows of a ``TensorList`` are packed once and
the gradients every step, so a stale pointer would update an array that is no longer the
parameter's or its state's. Each training run here goes down the CUDA path on the CPU
(``cuda_emulator``; a launch finds its arrays by their pointers) beside the same run on the
CPU path, and replaces parameters, state and gradients on the way: the results must agree.
"""

from __future__ import annotations

import warnings

import host_cuda
import numpy as np
import pytest
from cuda_emulator import install
from kernel_signatures import FakeCupyArray, fake

import dtrain as dt
from dtrain._tensor.optim.adam_plan import AdamPlan
from dtrain._tensor.optim.sgd_plan import SGDPlan
from dtrain.runtime.kernels import multi_tensor

SHAPES = [(3, 4), (5,), (2, 3)]


def _rand(shape, dtype=np.float32, seed=0):
    return fake(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


# ---- CachedLists and checked_lists ---------------------------------------------------------
def test_cached_lists_write_the_fresh_row_into_the_structs_packed_once(monkeypatch):
    install(monkeypatch)
    n = multi_tensor.MAX_TENSORS + 5  # two launches
    params = [_rand(i + 1, seed=i) for i in range(n)]
    state = [_rand(i + 1, seed=100 + i) for i in range(n)]
    cached = multi_tensor.CachedLists([params, None, state], fresh=1)
    for seed in (1000, 2000):  # fresh gradients each step
        grads = [_rand(i + 1, seed=seed + i) for i in range(n)]
        got = cached.fill(grads)
        assert got is cached.launches  # the same structs, rewritten
        expected = multi_tensor.tensor_lists([params, grads, state])
        assert len(got) == len(expected) == 2
        for (struct, count, grid), (want, want_count, want_grid) in zip(got, expected):
            assert (count, grid) == (want_count, want_grid)
            assert struct.tobytes() == want.tobytes()


@pytest.mark.parametrize(
    "bad",
    [
        lambda: _rand(3, np.float64),  # another dtype
        lambda: _rand(4),  # another size
        lambda: _rand((3, 2)).T[:, 0],  # not contiguous
        lambda: np.ones(3, np.float32),  # not a CUDA array
    ],
    ids=["dtype", "size", "strided", "numpy"],
)
def test_cached_lists_refuse_a_gradient_the_kernel_cannot_take(monkeypatch, bad):
    install(monkeypatch)
    params = [_rand(3, seed=1), _rand(3, seed=2)]
    cached = multi_tensor.CachedLists([params, None], fresh=1)
    good = [_rand(3, seed=3), _rand(3, seed=4)]
    before = cached.fill(good)[0][0].copy()
    assert cached.fill([good[0], bad()]) is None
    assert cached.fill(good[:1]) is None  # one gradient short
    assert cached.launches[0][0].tobytes() == before.tobytes()  # nothing written


def test_checked_lists_pack_as_tensor_lists_or_refuse(monkeypatch):
    install(monkeypatch)
    grads = [_rand(n, seed=n) for n in (3, 70000, 1)]
    packed = multi_tensor.checked_lists(grads)
    expected = multi_tensor.tensor_lists([grads])
    assert [(c, g) for _, c, g in packed] == [(c, g) for _, c, g in expected]
    assert packed[0][0].tobytes() == expected[0][0].tobytes()
    assert multi_tensor.checked_lists([*grads, _rand(2, np.float64)]) is None
    assert multi_tensor.checked_lists([*grads, _rand((2, 2)).T]) is None
    assert multi_tensor.checked_lists([*grads, np.ones(2, np.float32)]) is None
    assert multi_tensor.checked_lists([np.ones(2, np.float32)]) is None
    assert multi_tensor.checked_lists([_rand(2, np.int32)]) is None


class _Flagged(FakeCupyArray):
    """A fake cupy array with cupy's ``_c_contiguous`` flag, counting its reads."""

    reads = 0

    @property
    def _c_contiguous(self):
        _Flagged.reads += 1
        return self.flags.c_contiguous


_Flagged.__module__ = "cupy._fake"


def test_contiguity_is_read_from_the_types_own_flag_where_it_has_one(monkeypatch):
    install(monkeypatch)
    grads = [_rand(n, seed=n).view(_Flagged) for n in (3, 5)]
    _Flagged.reads = 0
    assert multi_tensor.checked_lists(grads) is not None
    cached = multi_tensor.CachedLists([[a.copy() for a in grads], None], fresh=1)
    assert cached.fill(grads) is not None
    assert _Flagged.reads == 4  # once per array and call, instead of a flags object
    strided = _rand((5, 2)).view(_Flagged).T[0]
    assert multi_tensor.checked_lists([grads[0], strided]) is None
    assert cached.fill([grads[0], strided]) is None
    assert cached.fill([grads[0], grads[1].view(FakeCupyArray)]) is None  # another type


# ---- whole optimizer runs: the CUDA path against the CPU path ---------------------------
@pytest.fixture(params=["references", "source"])
def emulator(monkeypatch, request):
    """The emulator, each launch carried out by the kernel's numpy reference, then by its
    own CUDA C compiled for the CPU (needs g++)."""
    if request.param == "source" and host_cuda.compiler() is None:
        pytest.skip("no g++ to run the kernels' CUDA C on the CPU")
    return install(monkeypatch, kernels=request.param)


MAKERS = {
    "Adam": lambda groups: dt.optim.Adam(groups, lr=0.05, weight_decay=0.1),
    "AdamW-amsgrad": lambda groups: dt.optim.AdamW(groups, lr=0.05, amsgrad=True),
    "AdamW-capturable": lambda groups: dt.optim.AdamW(groups, lr=0.05, capturable=True),
    "SGD": lambda groups: dt.optim.SGD(groups, lr=0.05),
    "SGD-momentum": lambda groups: dt.optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=True),
}


def _values(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


def _train(make, device, events, log=None):
    """Eight steps of ``make``'s optimizer over SHAPES in two groups, each step's
    gradients fresh arrays; ``events[step](params, optimizer, device)`` runs before that
    step. Returns the parameters, the optimizer and, where ``log`` (``_plan_log``) is
    given, per step the indices of the groups whose plan was built and of those it
    stepped."""
    params = [
        dt.nn.Parameter(dt.tensor(_values(s, i), device=device)) for i, s in enumerate(SHAPES)
    ]
    optimizer = make([{"params": params[:2]}, {"params": params[2:], "lr": 0.02}])
    history = []
    for step in range(8):
        for i, p in enumerate(params):
            p.grad = dt.tensor(_values(p.shape, 100 * step + i), device=device)
        if step in events:
            events[step](params, optimizer, device)
        if log is not None:
            log.clear()
        optimizer.step()
        if log is not None:
            index = {id(group): i for i, group in enumerate(optimizer.param_groups)}
            built = {index[g] for kind, g, _ in log if kind == "build"}
            stepped = {index[g] for kind, g, _ in log if kind == "launch"}
            history.append((built, stepped))
    return params, optimizer, history


@pytest.fixture
def plan_log(monkeypatch):
    """Records each plan built (not None) and each plan step: (kind, id(group), plan)."""
    log = []
    for plan_type in (AdamPlan, SGDPlan):
        build, launch = plan_type.build.__func__, plan_type.launch

        def logged_build(cls, optimizer, group, params, build=build):
            plan = build(cls, optimizer, group, params)
            if plan is not None:
                log.append(("refused" if plan.refused else "build", id(group), plan))
            return plan

        def logged_launch(self, group, launches, launch=launch):
            log.append(("launch", id(group), self))
            return launch(self, group, launches)

        monkeypatch.setattr(plan_type, "build", classmethod(logged_build))
        monkeypatch.setattr(plan_type, "launch", logged_launch)
    return log


def _replace_parameter(params, optimizer, device):
    params[0].data = dt.tensor(_values(SHAPES[0], 7), device=device)


def _replace_state(params, optimizer, device):
    for p in params[:2]:
        for name, value in list(optimizer.state[p].items()):
            if isinstance(value, dt.Tensor) and name != "step":
                fresh = dt.tensor(value.detach().cpu().numpy() * 0.5, device=device)
                if name == "exp_avg":
                    optimizer.state[p][name] = fresh  # a new tensor
                else:
                    value.data = fresh  # the same tensor, a new array


def _load_state(params, optimizer, device):
    optimizer.load_state_dict(optimizer.state_dict())  # copies of every state array


def _skip_one(params, optimizer, device):
    params[1].grad = None


def _strided_gradient(params, optimizer, device):
    g = _values(SHAPES[0][::-1], 9)
    params[0].grad = dt.tensor(g, device=device).T  # the kernel cannot take it: xp path


def _add_group(params, optimizer, device):
    extra = dt.nn.Parameter(dt.tensor(_values((4,), 11), device=device))
    extra.grad = dt.tensor(_values((4,), 12), device=device)
    params.append(extra)
    optimizer.add_param_group({"params": [extra]})


def _change_hyperparameters(params, optimizer, device):
    for group in optimizer.param_groups:
        group["lr"] *= 0.5
        group["weight_decay"] = 0.05
        group["maximize"] = True
        if "betas" in group:
            group["betas"] = (0.8, 0.95)
            group["eps"] = 1e-3
        elif group["momentum"]:
            group["momentum"] = 0.5


def _decay_lr(params, optimizer, device):
    for group in optimizer.param_groups:
        group["lr"] *= 0.7


EVENTS = {
    "fresh-gradients": {},
    "parameter-replaced": {3: _replace_parameter},
    "state-replaced": {2: _replace_state},
    "state-loaded": {3: _load_state},
    "gradient-missing": {2: _skip_one},
    "strided-gradient": {4: _strided_gradient},
    "group-added": {3: _add_group},
    "hyperparameters-changed": {3: _change_hyperparameters},
    "lr-schedule": dict.fromkeys(range(1, 8), _decay_lr),
}


def _expected_plans(name, events):
    """Per step, the groups whose plan is built and those it steps: every group's from its
    first step (a momentum SGD's second: its first makes the buffers), built again where
    an event changed what the plan holds."""
    first = 1 if name == "SGD-momentum" else 0
    host_steps = name in ("Adam", "AdamW-amsgrad")
    built = {step: set() for step in range(8)}
    general = {step: set() for step in range(8)}
    built[first] = {0, 1}
    general[0] = {0, 1} if first else set()
    groups = 2
    if events == "parameter-replaced":
        built[3] = {0}
    elif events == "state-replaced" and name != "SGD":  # plain SGD keeps no state
        built[2] = {0}
    elif events == "state-loaded":
        built[3] = {0, 1}
    elif events == "gradient-missing":
        built[2] = built[3] = {0}  # one parameter less, then all of them again
    elif events == "strided-gradient":
        general[4] = {0}  # the plan is kept, and used again next step
        if host_steps:
            built[5] = {0}  # the general path counted the steps on the host
    elif events == "group-added":
        groups = 3
        if first:
            general[3], built[4] = {2}, {2}
        else:
            built[3] = {2}
    return [
        (built[step], set(range(2 if step < 3 else groups)) - general[step]) for step in range(8)
    ]


@pytest.mark.parametrize("events", EVENTS)
@pytest.mark.parametrize("name", MAKERS)
def test_cuda_steps_match_the_cpu_when_arrays_change(emulator, plan_log, name, events):
    on_cpu, cpu_optimizer, _ = _train(MAKERS[name], None, EVENTS[events])
    on_gpu, gpu_optimizer, history = _train(MAKERS[name], "cuda", EVENTS[events], plan_log)
    assert history == _expected_plans(name, events)  # the plan built, kept and used
    for p, q in zip(on_gpu, on_cpu):
        np.testing.assert_allclose(p.detach().cpu().numpy(), q.detach().numpy(), rtol=1e-10)
    for p, q in zip(on_gpu, on_cpu):
        for key, value in cpu_optimizer.state[q].items():
            got = gpu_optimizer.state[p][key]
            if isinstance(value, dt.Tensor):
                value = value.detach().numpy()
            if isinstance(got, dt.Tensor):
                got = got.detach().cpu().numpy()
            np.testing.assert_allclose(got, value, rtol=1e-10)


@pytest.mark.parametrize("name", MAKERS)
def test_a_steady_step_reuses_its_plan_and_launches_once_per_group(emulator, name):
    params = [
        dt.nn.Parameter(dt.tensor(_values(s, i), device="cuda")) for i, s in enumerate(SHAPES)
    ]
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": 0.02}]
    optimizer = MAKERS[name](groups)
    checks = optimizer._scratch.checks
    plans = []
    for step in range(4):
        for i, p in enumerate(params):
            p.grad = dt.tensor(_values(p.shape, 10 * step + i), device="cuda")
        with emulator.counting() as launches:
            optimizer.step()
        plans.append([checks._plans.get(id(group)) for group in optimizer.param_groups])
    kernel = "adam_multi_tensor" if name.startswith("Adam") else "sgd_multi_tensor"
    assert launches[f"kernel {kernel}"] == 2
    assert launches["kernel adam_increment_steps"] == (2 if "capturable" in name else 0)
    assert None not in plans[1] and plans[1] == plans[2] == plans[3]  # built by step 2, kept
    optimizer.load_state_dict(optimizer.state_dict())
    assert not checks._plans  # the state arrays it held are replaced


def _odd_group(odd, device):
    """SHAPES' parameters on ``device`` and one more that the kernel cannot take."""
    params = [
        dt.nn.Parameter(dt.tensor(_values(s, i), device=device)) for i, s in enumerate(SHAPES)
    ]
    extra = dt.nn.Parameter(dt.tensor(_values((3, 4), 5), device=device))
    if odd == "strided":
        extra.data = dt.tensor(_values((4, 3), 5), device=device).T
    elif odd == "cpu":
        extra = dt.nn.Parameter(dt.tensor(_values((3, 4), 5)))
    elif odd == "aliased":  # a second Parameter over the first one's array
        extra = dt.nn.Parameter(params[0].detach())
    return params + [extra, params[0]] if odd == "listed-twice" else params + [extra]


@pytest.mark.parametrize("odd", ["strided", "cpu", "listed-twice", "aliased"])
@pytest.mark.parametrize("name", MAKERS)
def test_a_group_that_cannot_take_a_plan_is_refused_once(emulator, plan_log, name, odd):
    runs = []
    for device in (None, "cuda"):
        params = _odd_group(odd, device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a parameter listed twice warns
            optimizer = MAKERS[name](params)
        for step in range(5):
            for i, p in enumerate(params):
                p.grad = dt.tensor(_values(p.shape, 10 * step + i), device=p.device)
            plan_log.clear()
            optimizer.step()
            if device is not None:
                first = 1 if name == "SGD-momentum" else 0  # its first step makes the buffers
                kinds = [kind for kind, _, _ in plan_log]
                assert kinds == (["refused"] if step == first else []), step  # kept after
        runs.append(params)
    for p, q in zip(*runs):
        np.testing.assert_allclose(p.detach().cpu().numpy(), q.detach().cpu().numpy(), rtol=1e-10)


@pytest.mark.parametrize("name", MAKERS)
def test_two_parameters_over_one_array_are_updated_in_list_order(emulator, name):
    # The first one's gradient is strided (the elementwise path's), the second's is not:
    # neither may go to a launch, which would run before the first one's update.
    runs = []
    for device in (None, "cuda"):
        p = dt.nn.Parameter(dt.tensor(np.linspace(1, 2, 6), device=device))
        q = dt.nn.Parameter(p.detach())
        optimizer = MAKERS[name]([p, q])
        for step in range(3):
            p.grad = dt.tensor(_values((6, 2), step), device=device).T[0]  # strided
            q.grad = dt.tensor(_values((6,), step + 7), device=device)
            optimizer.step()
        runs.append(p.detach().cpu().numpy())
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-10)


def test_a_cpu_optimizer_keeps_no_plan():
    params = [dt.nn.Parameter(dt.tensor(_values(s, i))) for i, s in enumerate(SHAPES)]
    for make in MAKERS.values():
        optimizer = make(params)
        for p in params:
            p.grad = dt.tensor(_values(p.shape, 3))
        optimizer.step()
        assert not optimizer._scratch.checks._plans


# ---- clipping: one packing for both kernels, fresh gradients each call -------------------
def test_clip_packs_each_calls_gradients_and_matches_the_cpu(emulator):
    shapes = [(3, 4), (70000,), (1,)]
    for step in range(3):
        values = [_values(s, 10 * step + i) * 0.1 for i, s in enumerate(shapes)]
        on_gpu = [dt.nn.Parameter(dt.tensor(v, device="cuda")) for v in values]
        on_cpu = [dt.nn.Parameter(dt.tensor(v)) for v in values]
        for k, (p, q) in enumerate(zip(on_gpu, on_cpu)):
            g = _values(shapes[k], 50 + step + k)
            p.grad, q.grad = dt.tensor(g, device="cuda"), dt.tensor(g)
        if step == 2:  # a strided gradient: the CPU-style path, same numbers
            g = _values((4, 3), 99)
            on_gpu[0].grad, on_cpu[0].grad = dt.tensor(g, device="cuda").T, dt.tensor(g).T
        with emulator.counting() as launches:
            norm = dt.nn.utils.clip_grad_norm_(on_gpu, 1.0)
        expected = dt.nn.utils.clip_grad_norm_(on_cpu, 1.0)
        fused = step < 2
        assert launches["kernel sum_squares_multi_tensor"] == int(fused)
        assert launches["kernel clip_multi_tensor"] == int(fused)
        assert float(norm.cpu().item()) == pytest.approx(expected.item(), rel=1e-12)
        for p, q in zip(on_gpu, on_cpu):
            np.testing.assert_allclose(p.grad.cpu().numpy(), q.grad.numpy(), rtol=1e-12, atol=1e-15)
