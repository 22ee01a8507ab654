"""``dtrain.distributed.checkpoint.state_dict`` in one process: optimizer state keyed by
parameter name, a fresh optimizer's state made by a zero step, several optimizers, and the
same layout as PyTorch's (compared when torch is installed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
from dtrain.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    get_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


def make() -> nn.Module:
    dt.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))


def step(model: nn.Module, opt: Any, x: np.ndarray) -> None:
    opt.zero_grad()
    model(dt.tensor(x)).pow(2).sum().backward()
    opt.step()


X = np.array([[0.5, -1.0], [2.0, 0.25]], dtype=np.float32)


def test_a_fresh_optimizer_gets_state_and_the_parameters_stay():
    model = make()
    before = [p.tolist() for p in model.parameters()]
    opt = dt.optim.AdamW(model.parameters(), lr=0.1)
    model_sd, optim_sd = get_state_dict(model, opt)
    assert list(model_sd) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert list(optim_sd["state"]) == list(model_sd)
    assert sorted(optim_sd["state"]["0.weight"]) == ["exp_avg", "exp_avg_sq", "step"]
    assert optim_sd["param_groups"][0]["params"] == list(model_sd)
    assert optim_sd["param_groups"][0]["lr"] == 0.1 and opt.param_groups[0]["lr"] == 0.1
    assert [p.tolist() for p in model.parameters()] == before
    assert all(p.grad is None for p in model.parameters())


def test_set_state_dict_continues_like_the_original():
    model, other = make(), make()
    opt = dt.optim.AdamW(model.parameters(), lr=0.1)
    step(model, opt, X)
    model_sd, optim_sd = get_state_dict(model, opt)
    with dt.no_grad():
        for p in other.parameters():
            p.mul_(0.5)
    opt2 = dt.optim.AdamW(other.parameters(), lr=0.7)
    set_state_dict(other, opt2, model_state_dict=model_sd, optim_state_dict=optim_sd)
    assert opt2.param_groups[0]["lr"] == 0.1
    step(model, opt, X * 2)
    step(other, opt2, X * 2)
    for a, b in zip(model.parameters(), other.parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_two_optimizers_share_one_state_dict():
    model = make()
    first = dt.optim.SGD(model[0].parameters(), lr=0.1, momentum=0.9)
    second = dt.optim.AdamW(model[2].parameters(), lr=0.01)
    for opt in (first, second):
        step(model, opt, X)
    osd = get_optimizer_state_dict(model, [first, second])
    assert list(osd["state"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [g["params"] for g in osd["param_groups"]] == [
        ["0.weight", "0.bias"],
        ["2.weight", "2.bias"],
    ]
    new = make()
    a = dt.optim.SGD(new[0].parameters(), lr=0.5, momentum=0.9)
    b = dt.optim.AdamW(new[2].parameters(), lr=0.5)
    set_optimizer_state_dict(new, [a, b], osd)
    assert a.param_groups[0]["lr"] == 0.1 and b.param_groups[0]["lr"] == 0.01
    np.testing.assert_array_equal(
        a.state_dict()["state"][0]["momentum_buffer"].numpy(),
        first.state_dict()["state"][0]["momentum_buffer"].numpy(),
    )
    with pytest.raises(ValueError, match="no saved parameter group holds exactly"):
        set_optimizer_state_dict(new, dt.optim.SGD(new.parameters(), lr=0.1), osd)
    stranger = dt.optim.SGD([*new[0].parameters(), dt.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match=r"parameters \[2\] .* are not parameters of the model"):
        set_optimizer_state_dict(new, stranger, osd)


def test_options():
    model = make()
    model[0].bias.requires_grad_(False)
    sd = get_model_state_dict(model, options=StateDictOptions(ignore_frozen_params=True))
    assert list(sd) == ["0.weight", "2.weight", "2.bias"]
    with pytest.raises(NotImplementedError, match="broadcast_from_rank0"):
        get_model_state_dict(model, options=StateDictOptions(broadcast_from_rank0=True))
    opt = dt.optim.SGD(model.parameters(), lr=0.1)
    step(model, opt, X)
    opt.zero_grad(set_to_none=False)
    fresh = dt.optim.Adam(model.parameters())
    model(dt.tensor(X)).sum().backward()
    with pytest.raises(RuntimeError, match="has no state yet but its parameters have gradients"):
        get_optimizer_state_dict(model, fresh)


def test_the_layout_is_torchs(torch):
    """Same keys, same state names, same param_groups parameter names, and after one step
    from the same weights the same state values as torch's get_state_dict."""
    from torch.distributed.checkpoint.state_dict import get_state_dict as torch_get

    model = make()
    ref = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    with torch.no_grad():
        for p, q in zip(model.parameters(), ref.parameters()):
            q.copy_(torch.from_numpy(p.detach().numpy().copy()))
    opt = dt.optim.AdamW(model.parameters(), lr=0.1)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=0.1)
    step(model, opt, X)
    ref_opt.zero_grad()
    ref(torch.from_numpy(X)).pow(2).sum().backward()
    ref_opt.step()
    model_sd, optim_sd = get_state_dict(model, opt)
    ref_model_sd, ref_optim_sd = torch_get(ref, ref_opt)
    assert list(model_sd) == list(ref_model_sd)
    assert list(optim_sd["state"]) == list(ref_optim_sd["state"])
    for name, state in optim_sd["state"].items():
        ref_state = ref_optim_sd["state"][name]
        assert sorted(state) == sorted(ref_state)
        assert state["step"] == ref_state["step"].item()
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_allclose(state[key].numpy(), ref_state[key].numpy(), rtol=1e-5)
    ours, theirs = optim_sd["param_groups"][0], ref_optim_sd["param_groups"][0]
    assert ours["params"] == theirs["params"]
    assert ours["lr"] == theirs["lr"] and tuple(ours["betas"]) == tuple(theirs["betas"])
