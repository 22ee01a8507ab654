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


# ---- metadata: the checkpoint's version reaches the load pre-hooks --------------------------
def migrate_log(lib, to_tensor) -> list:
    """What a version-migrating load pre-hook sees: the saved ``_metadata``, an old
    checkpoint's version, and a dict without metadata."""

    class Versioned(lib.nn.Linear):
        _version = 2

    model = lib.nn.Sequential(Versioned(2, 2))
    state = model.state_dict()
    log = [sorted(state._metadata.items())]

    def migrate(m, s, prefix, metadata, *rest):
        log.append(dict(metadata))
        if metadata.get("version", 0) < 2 and prefix + "w" in s:
            s[prefix + "weight"] = s.pop(prefix + "w")

    model[0].register_load_state_dict_pre_hook(migrate)
    model.load_state_dict(state)
    old = type(state)((("0.w" if k == "0.weight" else k), v) for k, v in state.items())
    old._metadata = type(state._metadata)(state._metadata)
    old._metadata["0"] = {"version": 1}
    model.load_state_dict(old)  # migrated by the hook
    model.load_state_dict(dict(state), assign=True)  # no metadata
    return log


def test_state_dict_metadata_and_a_checkpoints_version_reach_the_hooks():
    log = migrate_log(dt, dt.tensor)
    assert log[0] == [("", {"version": 1}), ("0", {"version": 2})]
    assert log[1:] == [{"version": 2}, {"version": 1}, {"assign_to_params_buffers": True}]


def test_state_dict_metadata_matches_pytorchs(torch):
    assert migrate_log(dt, dt.tensor) == migrate_log(torch, torch.tensor)


def test_post_hooks_get_the_stored_metadata():
    model, seen = nn.Sequential(nn.Linear(2, 2)), []
    model[0].register_state_dict_post_hook(lambda m, s, p, meta: seen.append(meta))
    state = model.state_dict()
    assert seen == [{"version": 1}] and seen[0] is state._metadata["0"]
    assert not hasattr(model.state_dict(destination={}), "_metadata")  # as PyTorch


# ---- a size mismatch: the rest still loads, one error names everything ---------------------
def mismatch_sums(lib, to_tensor) -> tuple:
    model = lib.nn.Sequential(lib.nn.Linear(2, 2), lib.nn.Linear(2, 2))
    with lib.no_grad():
        for p in model.parameters():
            p.zero_()
    ones = lambda *shape: to_tensor(np.ones(shape, np.float32))
    state = {"0.weight": ones(3, 2), "0.bias": ones(2), "1.weight": ones(2, 2), "x": ones(1)}
    with pytest.raises(RuntimeError) as error:
        model.load_state_dict(state)
    sums = [float(p.detach().numpy().sum()) for p in model.parameters()]
    return sums, str(error.value)


def test_a_size_mismatch_loads_the_rest_and_reports_every_problem():
    sums, message = mismatch_sums(dt, dt.tensor)
    assert sums == [0.0, 2.0, 4.0, 0.0]
    assert "'0.weight': size mismatch" in message and "(3, 2)" in message
    assert "missing keys ['1.bias']" in message and "unexpected keys ['x']" in message


def test_a_size_mismatch_loads_the_rest_as_pytorch(torch):
    assert mismatch_sums(dt, dt.tensor)[0] == mismatch_sums(torch, torch.tensor)[0]


def test_a_key_under_a_none_sub_module_is_not_unexpected(torch):
    for lib in (dt, torch):
        model = lib.nn.Linear(2, 2)
        model.register_module("b", None)
        state = dict(model.state_dict(), **{"b.weight": model.weight.detach()})
        result = model.load_state_dict(state)
        assert (list(result.missing_keys), list(result.unexpected_keys)) == ([], [])


def test_a_key_under_a_none_sub_module_loads():
    model = nn.Linear(2, 2)
    model.register_module("b", None)
    state = dict(model.state_dict(), **{"b.weight": dt.ones(1), "c.weight": dt.ones(1)})
    assert model.load_state_dict(state, strict=False) == ([], ["c.weight"])


# ---- cost: linear in the number of keys ------------------------------------------------------
class CountingKey(str):
    """A key that counts the prefix tests made on it (the loader's work per key)."""

    calls = 0

    def startswith(self, *args):
        CountingKey.calls += 1
        return str.startswith(self, *args)


@pytest.mark.parametrize("n", [50, 400])
def test_load_state_dict_tests_each_key_a_bounded_number_of_times(n):
    model = nn.Sequential(*[nn.Linear(1, 1) for _ in range(n)])
    state = {CountingKey(k): v for k, v in model.state_dict().items()}
    CountingKey.calls = 0
    model.load_state_dict(state)
    # each key is tested by its parent and by its own module, not once per sibling
    assert CountingKey.calls <= 3 * len(state)


def test_a_childs_private_hook_result_reaches_its_later_hooks_only():
    model, seen = nn.Sequential(nn.Linear(2, 2)), []
    model[0]._register_state_dict_hook(lambda m, s, p, meta: {"other": dt.ones(1)})
    model[0].register_state_dict_post_hook(lambda m, s, p, meta: seen.append(sorted(s)))
    assert list(model.state_dict()) == ["0.weight", "0.bias"]  # the parent's dict goes on
    assert seen == [["other"]]  # as PyTorch: the child's later hooks see the returned dict
