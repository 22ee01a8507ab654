"""Optimizers: updates against numpy references of PyTorch's documented algorithms (and
against torch.optim itself when torch is installed), param groups, zero_grad, state dicts."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dtrain as dt
import dtrain.optim as optim

SHAPES = [(3, 4), (5,)]
STEPS = 5


def _grads(seed: int = 1) -> list[list[np.ndarray]]:
    """Per step, one gradient per parameter (float64)."""
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s) for s in SHAPES] for _ in range(STEPS)]


def _initial(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def _params(arrays: list[np.ndarray], dtype=np.float64, device=None) -> list[dt.nn.Parameter]:
    return [dt.nn.Parameter(dt.tensor(a.astype(dtype), device=device)) for a in arrays]


def _set_grads(params, grads) -> None:
    for p, g in zip(params, grads):
        p.grad = dt.tensor(g.astype(p.dtype), device=p.device)


def _run(make, grads, dtype=np.float64, device=None) -> list[np.ndarray]:
    """Two groups (one parameter each, lrs 0.1 and 0.01), ``len(grads)`` steps."""
    params = _params(_initial(), dtype, device)
    opt = make([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.01}])
    for step_grads in grads:
        _set_grads(params, step_grads)
        opt.step()
    return [np.array(p.detach()) for p in params]


# ---- numpy references, written from PyTorch's documented algorithms ----------------------
def _ref_sgd(p, grads, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False):
    p = p.copy()
    b = None
    for g in grads:
        g = -g if maximize else g
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            b = g.copy() if b is None else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        p = p - lr * g
    return p


def _ref_adam(
    p,
    grads,
    lr,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0,
    amsgrad=False,
    maximize=False,
    decoupled=False,
):
    b1, b2 = betas
    p = p.copy()
    m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = -g if maximize else g
        if weight_decay and decoupled:
            p = p * (1 - lr * weight_decay)
        elif weight_decay:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        if amsgrad:
            vmax = np.maximum(vmax, v)
            v_hat = vmax / (1 - b2**t)
        else:
            v_hat = v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


SGD_CASES = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.3},
    {"momentum": 0.9, "nesterov": True},
    {"weight_decay": 0.1},
    {"momentum": 0.8, "weight_decay": 0.1, "nesterov": True},
    {"maximize": True},
    {"momentum": 0.5, "dampening": 0.5, "weight_decay": 0.05, "maximize": True},
]
ADAM_CASES = [
    {},
    {"weight_decay": 0.1},
    {"amsgrad": True},
    {"maximize": True},
    {"betas": (0.3, 0.9), "eps": 1e-3, "weight_decay": 0.2, "amsgrad": True, "maximize": True},
]


@pytest.mark.parametrize("options", SGD_CASES, ids=str)
def test_sgd_matches_reference(options):
    grads = _grads()
    got = _run(lambda groups: optim.SGD(groups, lr=0.1, **options), grads)
    for i, (lr, start) in enumerate(zip((0.1, 0.01), _initial())):
        expected = _ref_sgd(start, [g[i] for g in grads], lr, **options)
        np.testing.assert_allclose(got[i], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("options", ADAM_CASES, ids=str)
@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_adam_matches_reference(cls, options):
    grads = _grads()
    make = getattr(optim, cls)
    got = _run(lambda groups: make(groups, lr=0.1, **options), grads)
    decoupled = cls == "AdamW"
    if decoupled:
        options = {"weight_decay": 1e-2, **options}
    for i, (lr, start) in enumerate(zip((0.1, 0.01), _initial())):
        expected = _ref_adam(start, [g[i] for g in grads], lr, decoupled=decoupled, **options)
        np.testing.assert_allclose(got[i], expected, rtol=1e-12, atol=1e-14)


def test_adam_decoupled_weight_decay_flag_equals_adamw():
    grads = _grads()
    a = _run(lambda g: optim.Adam(g, lr=0.1, weight_decay=0.1, decoupled_weight_decay=True), grads)
    b = _run(lambda g: optim.AdamW(g, lr=0.1, weight_decay=0.1), grads)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("cls", ["SGD", "Adam", "AdamW"])
def test_float32_state_keeps_the_parameter_dtype(cls):
    p = _params(_initial(), np.float32)
    opt = getattr(optim, cls)(p, lr=0.1, **({"momentum": 0.9} if cls == "SGD" else {}))
    _set_grads(p, _grads()[0])
    opt.step()
    for q in p:
        assert q.dtype == np.float32
        for value in opt.state[q].values():
            if isinstance(value, dt.Tensor):
                assert value.dtype == np.float32 and value.shape == q.shape


# ---- behaviour shared by every optimizer ------------------------------------------------
MAKERS = {
    "SGD": lambda params: optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01),
    "Adam": lambda params: optim.Adam(params, lr=0.1, amsgrad=True),
    "AdamW": lambda params: optim.AdamW(params, lr=0.1),
}


@pytest.mark.parametrize("name", MAKERS)
def test_params_without_grad_are_skipped(name):
    params = _params(_initial())
    opt = MAKERS[name](params)
    params[0].grad = dt.ones(*SHAPES[0], dtype=dt.float64)
    before = params[1].detach().numpy().copy()
    opt.step()
    np.testing.assert_array_equal(params[1].detach().numpy(), before)
    assert params[1] not in opt.state
    assert params[0]._version[0] == 1 and params[1]._version[0] == 0


@pytest.mark.parametrize("name", MAKERS)
def test_step_bumps_the_version_so_a_saved_graph_refuses_backward(name):
    (p,) = _params(_initial()[:1])
    opt = MAKERS[name]([p])
    y = (p * p).sum()
    p.grad = dt.ones(*p.shape, dtype=dt.float64)
    opt.step()
    with pytest.raises(RuntimeError):
        y.backward()


def test_training_with_autograd_reduces_the_loss():
    dt.manual_seed(0)
    w = dt.nn.Parameter(dt.randn(4, 1))
    x = dt.randn(32, 4)
    y = x @ dt.tensor([[1.0], [-2.0], [0.5], [3.0]])
    opt = optim.Adam([w], lr=0.1)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-2 * losses[0]


def test_closure_is_called_with_grad_enabled_and_its_loss_returned():
    (p,) = _params(_initial()[:1])
    opt = optim.SGD([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with dt.no_grad():
        loss = opt.step(closure)
    assert isinstance(loss, dt.Tensor) and p.grad is not None


def test_zero_grad():
    params = _params(_initial())
    opt = optim.SGD(params, lr=0.1)
    _set_grads(params, _grads()[0])
    grad = params[0].grad
    version = grad._version[0]
    opt.zero_grad(set_to_none=False)
    assert params[0].grad is grad and not grad.detach().numpy().any()
    assert grad._version[0] == version + 1
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    opt.zero_grad()  # no gradients: nothing to do


# ---- param groups -----------------------------------------------------------------------
def test_param_groups_fill_defaults_and_keep_overrides():
    params = _params(_initial())
    opt = optim.SGD([{"params": params[:1]}, {"params": params[1], "momentum": 0.5}], lr=0.2)
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.2]
    assert [g["momentum"] for g in opt.param_groups] == [0, 0.5]
    assert opt.param_groups[1]["params"] == [params[1]]  # a single tensor becomes a list
    extra = dt.nn.Parameter(dt.zeros(2))
    opt.add_param_group({"params": [extra], "lr": 1.0})
    assert opt.param_groups[2]["lr"] == 1.0 and opt.param_groups[2]["momentum"] == 0


def test_named_parameters_are_accepted():
    params = _params(_initial())
    opt = optim.Adam([("w", params[0]), ("b", params[1])])
    assert opt.param_groups[0]["param_names"] == ["w", "b"]
    assert opt.param_groups[0]["params"] == params
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["w", "b"]


def test_bad_params():
    params = _params(_initial())
    with pytest.raises(TypeError, match="iterable of Tensors"):
        optim.SGD(params[0])
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([])
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD(set(params))
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD([{"params": set(params)}])
    with pytest.raises(TypeError, match=r"params\[1\] is a int"):
        optim.SGD([params[0], 3])
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([params[0] * 2])
    opt = optim.SGD(params)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [params[1]]})
    with pytest.raises(TypeError, match="must be a dict"):
        opt.add_param_group([params[0]])
    with pytest.warns(UserWarning, match="duplicate"):
        optim.SGD([params[0], params[0]])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: optim.SGD(p, lr=-1), "Invalid learning rate: -1"),
        (lambda p: optim.SGD(p, lr=float("nan")), "Invalid learning rate: nan"),
        (lambda p: optim.SGD(p, momentum=-0.5), "Invalid momentum value: -0.5"),
        (lambda p: optim.SGD(p, weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
        (lambda p: optim.SGD(p, nesterov=True), "momentum=0 and dampening=0"),
        (
            lambda p: optim.SGD(p, momentum=0.9, dampening=0.1, nesterov=True),
            "momentum=0.9 and dampening=0.1",
        ),
        (lambda p: optim.Adam(p, lr=-0.01), "Invalid learning rate: -0.01"),
        (lambda p: optim.Adam(p, eps=-1e-8), "Invalid epsilon value: -1e-08"),
        (lambda p: optim.Adam(p, betas=(1.0, 0.999)), "index 0: 1.0"),
        (lambda p: optim.Adam(p, betas=(0.9, -0.1)), "index 1: -0.1"),
        (lambda p: optim.Adam(p, weight_decay=-2), "Invalid weight_decay value: -2"),
        (lambda p: optim.AdamW(p, lr=-3), "Invalid learning rate: -3"),
        (lambda p: optim.AdamW(p, betas=(0.9, 1.5)), "index 1: 1.5"),
    ],
)
def test_bad_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message):
        make(_params(_initial()))


# ---- state dicts ------------------------------------------------------------------------
def _through_checkpoint(state_dict):
    """What a safetensors + JSON checkpoint gives back: fresh arrays, str keys, lists."""
    state = {
        str(k): {
            name: dt.tensor(v.detach().numpy().copy()) if isinstance(v, dt.Tensor) else v
            for name, v in s.items()
        }
        for k, s in state_dict["state"].items()
    }
    return {"state": state, "param_groups": json.loads(json.dumps(state_dict["param_groups"]))}


@pytest.mark.parametrize("checkpoint", [False, True], ids=["direct", "json"])
@pytest.mark.parametrize("name", MAKERS)
def test_state_dict_round_trip_continues_bitwise(name, checkpoint):
    grads = _grads(seed=2) + _grads(seed=3)
    make = MAKERS[name]

    def groups(params):
        return [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.01}]

    reference = _params(_initial())
    ref_opt = make(groups(reference))
    for step_grads in grads:
        _set_grads(reference, step_grads)
        ref_opt.step()

    first = _params(_initial())
    opt = make(groups(first))
    for step_grads in grads[:STEPS]:
        _set_grads(first, step_grads)
        opt.step()
    saved = opt.state_dict()
    assert sorted(saved["state"]) == [0, 1]
    assert [g["params"] for g in saved["param_groups"]] == [[0], [1]]
    if checkpoint:
        saved = _through_checkpoint(saved)

    resumed = [dt.nn.Parameter(dt.tensor(p.detach().numpy().copy())) for p in first]
    new_opt = make(groups([resumed[0], resumed[1]]))
    new_opt.param_groups[1]["lr"] = 123.0  # the saved groups' options win
    new_opt.load_state_dict(saved)
    assert new_opt.param_groups[1]["lr"] == 0.01
    assert new_opt.param_groups[0]["params"] == [resumed[0]]
    for p, q in zip(first, resumed):  # loaded state is a copy, not the saved tensors
        for key, value in opt.state[p].items():
            if isinstance(value, dt.Tensor):
                assert new_opt.state[q][key]._array is not value._array
    for step_grads in grads[STEPS:]:
        _set_grads(resumed, step_grads)
        new_opt.step()
        _set_grads(first, step_grads)
        opt.step()
    for a, b in zip(reference, resumed):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    for a, b in zip(reference, first):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_state_dict_layout_and_json_types():
    params = _params(_initial())
    opt = optim.Adam(params, lr=0.1, betas=(0.8, 0.9))
    _set_grads(params, _grads()[0])
    opt.step()
    sd = opt.state_dict()
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert (
        sd["state"][0]["step"] == 1 and sd["state"][0]["exp_avg"] is opt.state[params[0]]["exp_avg"]
    )
    new = optim.Adam(_params(_initial()))
    new.load_state_dict(_through_checkpoint(sd))
    assert new.param_groups[0]["betas"] == (0.8, 0.9)  # a JSON list back to a tuple


def test_adamw_keeps_decoupled_weight_decay_after_loading_an_adam_state():
    params = _params(_initial())
    sd = optim.Adam(params).state_dict()
    opt = optim.AdamW(params)
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["decoupled_weight_decay"] is True


def test_load_state_dict_mismatches_name_the_difference():
    params = _params(_initial())
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    _set_grads(params, _grads()[0])
    opt.step()
    sd = opt.state_dict()

    two_groups = optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
    with pytest.raises(ValueError, match="has 1 parameter groups but the optimizer has 2"):
        two_groups.load_state_dict(sd)
    smaller = optim.SGD(params[:1], lr=0.1)
    with pytest.raises(ValueError, match="group 0 has 2 parameters but the optimizer's has 1"):
        smaller.load_state_dict(sd)
    swapped = optim.SGD(list(reversed(params)), lr=0.1)
    with pytest.raises(ValueError, match=r"state\[0\]\['momentum_buffer'\] has shape \(3, 4\)"):
        swapped.load_state_dict(sd)


def test_load_state_dict_casts_state_to_the_parameter_dtype():
    params = _params(_initial())
    opt = optim.Adam(params)
    _set_grads(params, _grads()[0])
    opt.step()
    p32 = _params(_initial(), np.float32)
    new = optim.Adam(p32)
    new.load_state_dict(opt.state_dict())
    assert new.state[p32[0]]["exp_avg"].dtype == np.float32
    assert new.state[p32[0]]["step"] == 1


def test_torch_style_step_tensor_loads_as_a_number():
    params = _params(_initial())
    opt = optim.Adam(params)
    _set_grads(params, _grads()[0])
    opt.step()
    sd = opt.state_dict()
    for s in sd["state"].values():
        s["step"] = dt.tensor(float(s["step"]))
    new = optim.Adam(_params(_initial()))
    new.load_state_dict(sd)
    assert all(s["step"] == 1.0 for s in new.state.values())


# ---- against torch.optim ----------------------------------------------------------------
TORCH_CASES = [("SGD", o) for o in SGD_CASES] + [
    (cls, o) for cls in ("Adam", "AdamW") for o in ADAM_CASES
]


@pytest.mark.parametrize(("cls", "options"), TORCH_CASES, ids=str)
def test_matches_torch_optim(cls, options):
    torch = pytest.importorskip("torch")
    grads = _grads()
    got = _run(lambda groups: getattr(optim, cls)(groups, lr=0.1, **options), grads, np.float32)

    tparams = [torch.nn.Parameter(torch.tensor(a.astype(np.float32))) for a in _initial()]
    topt = getattr(torch.optim, cls)(
        [{"params": [tparams[0]]}, {"params": [tparams[1]], "lr": 0.01}],
        lr=0.1,
        foreach=False,
        **options,
    )
    for step_grads in grads:
        for p, g in zip(tparams, step_grads):
            p.grad = torch.tensor(g.astype(np.float32))
        topt.step()
    for ours, theirs in zip(got, tparams):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=2e-6, atol=1e-6)


# ---- on a GPU ---------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")
@pytest.mark.parametrize(("cls", "options"), TORCH_CASES, ids=str)
def test_cuda_matches_cpu(cls, options):
    grads = _grads()
    make = lambda groups: getattr(optim, cls)(groups, lr=0.1, **options)
    on_gpu = _run(make, grads, np.float32, "cuda")
    on_cpu = _run(make, grads, np.float32)
    for a, b in zip(on_gpu, on_cpu):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")
@pytest.mark.parametrize("name", MAKERS)
def test_cpu_state_loads_onto_cuda_parameters(name):
    params = _params(_initial())
    opt = MAKERS[name](params)
    _set_grads(params, _grads()[0])
    opt.step()
    # Resume where the CPU run stands: its parameters after one step, and its state.
    cuda_params = _params([p.detach().numpy() for p in params], device="cuda")
    cuda_opt = MAKERS[name](cuda_params)
    cuda_opt.load_state_dict(opt.state_dict())
    for p in cuda_params:
        for value in cuda_opt.state[p].values():
            if isinstance(value, dt.Tensor):
                assert value.is_cuda
    _set_grads(cuda_params, _grads()[1])
    cuda_opt.step()
    _set_grads(params, _grads()[1])
    opt.step()
    for a, b in zip(cuda_params, params):
        np.testing.assert_allclose(a.detach().cpu().numpy(), b.detach().numpy(), rtol=1e-10)
