"""FSDP model and optimizer state round trips on 2 real ranks (tcp) for what the main
checkpoint tests do not cover: 0-d parameters (first in a unit, a unit of only one), a
frozen unit, SGD with momentum and two parameter groups, Adam with amsgrad, and NO_SHARD
(whose full load and summon_full_params(writeback=True) work on every rank)."""

from __future__ import annotations

import numpy as np
import pytest
from launcher import run_tcp

ATOL = 2e-6  # float32 round-off: the same sums in a different order


@pytest.mark.parametrize(
    ("kind", "strategy"),
    [("adam", "FULL_SHARD"), ("sgd", "FULL_SHARD"), ("sgd", "NO_SHARD"), ("adam", "NO_SHARD")],
)
def test_full_state_round_trip_then_training_equals_the_plain_run(kind, strategy):
    for value in run_tcp(
        2, "fsdp_optim_workers:round_trip", {"kind": kind, "strategy": strategy}
    ).values():
        full, plain = value["full_optim"], value["plain_optim"]
        assert sorted(full["state"]) == sorted(plain)
        for name, state in full["state"].items():
            assert sorted(state) == sorted(plain[name])
            for key, got in state.items():
                want = plain[name][key]
                if isinstance(want, dict):  # a tensor: the parameter's shape, its values
                    assert got["shape"] == want["shape"], (name, key)
                    np.testing.assert_allclose(got["tensor"], want["tensor"], atol=1e-6, rtol=1e-4)
                else:
                    assert got == want, (name, key)
        assert full["state"]["scale"][sorted(full["state"]["scale"])[0]] is not None
        assert [g["params"] for g in full["param_groups"]][-1] == (
            ["head.weight", "head.bias"] if kind == "sgd" else full["param_groups"][0]["params"]
        )
        assert value["same_without_optim"] and value["reloaded_optim"]
        after, want = value["after"], value["plain_after"]
        assert list(after) == list(want)
        for key in want:
            np.testing.assert_allclose(after[key], want[key], atol=ATOL, err_msg=key)
        bias = np.asarray(value["summoned"]["lin.bias"]) - np.asarray(after["lin.bias"])
        np.testing.assert_allclose(bias, np.ones(4), atol=1e-6)


def test_hook_keys_inside_fsdp_and_optimizer_state_copies():
    for value in run_tcp(2, "fsdp_optim_workers:hooks_and_copies", {}).values():
        assert "a.scale" in value["plain_keys"]
        for keys in (value["fsdp_keys"], value["sharded_keys"]):
            assert sorted(keys) == sorted(value["plain_keys"])
        # a later step does not change what was saved (the plain parameter's state too)
        assert value["unchanged"] == {k: True for k in value["unchanged"]}
        assert "extra.weight" in value["unchanged"]
