"""``Module``'s state-dict hooks: what each receives, the order they run in (PyTorch's
recursion: pre-hook, own entries, sub-modules, post-hook), what they may change, removal;
and the same sequence of calls as PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn


def record(lib, model, log: list) -> list:
    """Register all four hooks on every module of ``model`` (``lib``: dtrain or torch),
    each appending what it saw to ``log``; returns the handles."""
    handles = []
    for name, module in model.named_modules():

        def pre(m, prefix, keep_vars, name=name):
            log.append(("pre", name, prefix, keep_vars))

        def post(m, state, prefix, metadata, name=name):
            log.append(("post", name, prefix, sorted(state)))

        def load_pre(m, state, prefix, metadata, strict, missing, unexpected, errors, name=name):
            log.append(("load_pre", name, prefix, sorted(state), strict, list(missing)))

        def load_post(m, keys, name=name):
            log.append(("load_post", name, list(keys.missing_keys), list(keys.unexpected_keys)))

        handles += [
            module.register_state_dict_pre_hook(pre),
            module.register_state_dict_post_hook(post),
            module.register_load_state_dict_pre_hook(load_pre),
            module.register_load_state_dict_post_hook(load_post),
        ]
    return handles


def build(lib):
    return lib.nn.Sequential(lib.nn.Linear(2, 3), lib.nn.Sequential(lib.nn.Linear(3, 1)))


def exercise(lib, to_tensor) -> list:
    model, log = build(lib), []
    handles = record(lib, model, log)
    state = model.state_dict()
    values = {k: to_tensor(np.full(tuple(v.shape), 0.5, np.float32)) for k, v in state.items()}
    del values["1.0.bias"]
    values["1.0.extra"] = to_tensor(np.zeros(1, np.float32))
    result = model.load_state_dict(values, strict=False)
    log.append(("result", list(result.missing_keys), list(result.unexpected_keys)))
    for handle in handles:
        handle.remove()
    model.state_dict()
    model.load_state_dict(model.state_dict())
    return log


def test_hooks_run_in_pytorchs_order_with_their_arguments():
    log = exercise(dt, dt.tensor)
    assert [entry[:3] for entry in log[:8]] == [
        ("pre", "", ""),
        ("pre", "0", "0."),
        ("post", "0", "0."),
        ("pre", "1", "1."),
        ("pre", "1.0", "1.0."),
        ("post", "1.0", "1.0."),
        ("post", "1", "1."),
        ("post", "", ""),
    ]
    assert log[2][3] == ["0.bias", "0.weight"]  # a post-hook sees what is there so far
    assert log[4][3] is False  # keep_vars
    load = log[8:]
    assert [entry[:3] for entry in load[:-1]] == [
        ("load_pre", "", ""),
        ("load_pre", "0", "0."),
        ("load_post", "0", []),
        ("load_pre", "1", "1."),
        ("load_pre", "1.0", "1.0."),
        ("load_post", "1.0", ["1.0.bias"]),
        ("load_post", "1", ["1.0.bias"]),
        ("load_post", "", ["1.0.bias"]),
    ]
    assert load[3][3] == ["1.0.extra", "1.0.weight"]  # a sub-module sees its own keys
    assert load[0][4] is True  # strict is passed as True, as PyTorch does
    assert load[-2][3] == ["1.0.extra"]
    assert load[-1] == ("result", ["1.0.bias"], ["1.0.extra"])
    assert len(log) == 8 + 9  # removed hooks run no more


def test_hooks_match_pytorchs(torch):
    ours = exercise(dt, dt.tensor)
    theirs = exercise(torch, torch.tensor)
    assert ours == theirs


def test_hooks_change_what_is_saved_and_loaded():
    model = nn.Sequential(nn.Linear(2, 2))
    model[0].register_state_dict_post_hook(
        lambda m, state, prefix, meta: state.update({prefix + "scale": dt.ones(1)})
    )
    assert list(model.state_dict()) == ["0.weight", "0.bias", "0.scale"]

    def rename(m, state, prefix, meta, strict, missing, unexpected, errors):
        if prefix + "w" in state:
            state[prefix + "weight"] = state.pop(prefix + "w")

    model[0].register_load_state_dict_pre_hook(rename)
    model[0].register_load_state_dict_post_hook(lambda m, keys: keys.unexpected_keys.clear())
    result = model.load_state_dict(
        {"0.w": dt.full((2, 2), 3.0), "0.bias": dt.zeros(2), "0.scale": dt.ones(1)}
    )
    assert result == ([], [])
    np.testing.assert_array_equal(model[0].weight.detach().numpy(), np.full((2, 2), 3.0))
    # the caller's dict is not changed (the hooks get a copy)
    given = {"0.w": dt.zeros(2, 2), "0.bias": dt.zeros(2)}
    model.load_state_dict(given)
    assert list(given) == ["0.w", "0.bias"]


def test_hook_return_values():
    model = nn.Linear(2, 2)
    handle = model.register_state_dict_post_hook(lambda *args: {"x": 1})
    with pytest.raises(RuntimeError, match="must return None"):
        model.state_dict()
    handle.remove()
    with model._register_state_dict_hook(lambda *args: {"x": dt.ones(1)}):  # the older form
        assert list(model.state_dict()) == ["x"]
    assert list(model.state_dict()) == ["weight", "bias"]
    model.register_load_state_dict_post_hook(lambda m, keys: 1)
    with pytest.raises(RuntimeError, match="must return None"):
        model.load_state_dict(model.state_dict())


def test_a_hook_error_message_fails_the_load():
    model = nn.Linear(2, 2)
    model.register_load_state_dict_pre_hook(
        lambda m, s, p, meta, strict, miss, unexp, errors: errors.append("bad version")
    )
    with pytest.raises(RuntimeError, match="bad version"):
        model.load_state_dict(model.state_dict())
