"""FSDP checkpointing with real ranks (tcp): train on 2 ranks, save the model and optimizer
state (full and sharded), resume on 3 ranks (and on 1 rank and a plain model for the full
form) and train on: equal to the uninterrupted run. The full optimizer state equals the plain
optimizer's; LOCAL round trips; an FSDP unit in a plain parent gives and takes its keys
through the state-dict hooks; and the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from launcher import run_tcp

ATOL = 2e-6  # float32 round-off: the same sums in a different order
N, M = 2, 2


def max_diff(a: dict, b: dict) -> float:
    assert list(a) == list(b)
    return max(float(np.abs(np.subtract(a[k], b[k])).max()) for k in a)


def values_of(value):
    """A decoded-enough view of an encoded state value: the list of numbers."""
    if isinstance(value, dict) and "tensor" in value:
        return value["tensor"]
    return value


@pytest.fixture(scope="module")
def saved() -> list:
    return run_tcp(2, "fsdp_state_workers:save", {"steps": N}).values()


@pytest.fixture(scope="module")
def saved_path(saved, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("fsdp_state") / "saved.json"
    path.write_text(json.dumps(saved))
    return str(path)


def test_full_optim_state_equals_the_plain_optimizers(saved):
    for value in saved:
        full, plain = value["full_optim"], value["plain_optim"]
        # keyed by name, in the optimizer's order (the flat parameters', unit by unit)
        assert sorted(full["state"]) == sorted(value["plain_keys"]) == sorted(plain["state"])
        assert sorted(full["param_groups"][0]["params"]) == sorted(value["plain_keys"])
        assert full["param_groups"][0]["lr"] == plain["param_groups"][0]["lr"]
        for key, state in full["state"].items():
            assert set(state) == {"step", "exp_avg", "exp_avg_sq"}
            assert state["step"] == plain["state"][key]["step"] == N
            for name in ("exp_avg", "exp_avg_sq"):
                got, want = state[name], plain["state"][key][name]
                assert got["shape"] == want["shape"]
                np.testing.assert_allclose(got["tensor"], want["tensor"], atol=1e-6, rtol=1e-4)
        assert value["legacy_full_optim"] == full
        assert full == saved[0]["full_optim"]
    assert saved[0]["rank0_optim_keys"] == ["state", "param_groups"]
    assert saved[1]["rank0_optim_keys"] == []


def test_sharded_forms_hold_this_ranks_ranges(saved):
    for value in saved:
        assert value["sharded_types"] == ["ShardedTensor"]  # the model has no buffers
        model, optim = value["sharded_model"], value["sharded_optim"]
        assert list(model) == value["plain_keys"]  # the full state dict's order
        assert sorted(optim["state"]) == sorted(model)
        full = value["full_model"]
        for key, piece in model.items():
            whole = np.asarray(full[key]["tensor"]).reshape(-1)
            lo, hi = piece["offset"], piece["offset"] + len(piece["local"])
            np.testing.assert_array_equal(piece["local"], whole[lo:hi])
            for name in ("exp_avg", "exp_avg_sq"):
                got = optim["state"][key][name]
                assert (got["offset"], len(got["local"])) == (lo, hi - lo)
                want = np.asarray(value["full_optim"]["state"][key][name]["tensor"]).reshape(-1)
                np.testing.assert_allclose(got["local"], want[lo:hi], atol=1e-7)
    # the two ranks' ranges of each parameter tile it, some empty on one rank
    empty = 0
    for key in saved[0]["sharded_model"]:
        parts = sorted(
            (v["sharded_model"][key]["offset"], len(v["sharded_model"][key]["local"]))
            for v in saved
        )
        numel = int(np.prod(saved[0]["sharded_model"][key]["sharded"]))
        assert sum(n for _, n in parts) == numel
        empty += any(n == 0 for _, n in parts)
    assert empty > 0


def test_local_state_dict_round_trips_at_the_same_world_size(saved):
    for value in saved:
        assert value["local_keys"] == [
            "_flat_param",
            "blocks.0._flat_param",
            "blocks.1._flat_param",
        ]
        loaded, original = value["local_round_trip"]
        assert loaded == original


@pytest.mark.parametrize("form", ["full", "sharded"])
def test_resume_on_three_ranks_equals_the_uninterrupted_run(saved_path, form):
    args = {"saved_path": saved_path, "form": form, "first": N, "then": M, "saved_world": 2}
    for value in run_tcp(3, "fsdp_state_workers:resume", args).values():
        assert max_diff(value["fsdp"], value["plain"]) < ATOL
        if form == "sharded":
            errors = value["errors"]
            assert errors["local_other_world"][0] == "ValueError"
            assert "loads only on the rank and world size" in errors["local_other_world"][1]
            assert errors["other_range"][0] == "ValueError"
            assert "but this rank holds" in errors["other_range"][1]
            assert errors["missing_key"][0] == "RuntimeError"
            assert "missing keys ['blocks.1.fc1.weight']" in errors["missing_key"][1]
            assert errors["missing_optim_key"][0] == "KeyError"
            assert "blocks.0.proj.weight" in errors["missing_optim_key"][1]


def test_resume_full_form_on_one_rank_and_in_a_plain_model(saved_path):
    args = {"saved_path": saved_path, "form": "full", "first": N, "then": M, "saved_world": 2}
    (value,) = run_tcp(1, "fsdp_state_workers:resume", args).values()
    assert max_diff(value["fsdp"], value["plain"]) < ATOL
    assert max_diff(value["plain_loaded"], value["plain"]) < ATOL


def test_an_fsdp_unit_in_a_plain_parent_gives_its_original_keys():
    for value in run_tcp(2, "fsdp_state_workers:plain_parent", {}).values():
        child = {f"fsdp.{k}": v for k, v in value["child_full"].items()}
        assert list(value["full"]) == [f"fsdp.{k}" for k in value["plain_keys"]] + [
            "extra.weight",
            "extra.bias",
        ]
        assert {k: value["full"][k] for k in child} == child
        assert value["load_result"] == [[], []]
        assert value["loaded"] == value["full"]
        assert sorted(value["optim_keys"]) == sorted(value["full"])
        assert value["optim_keys"] == value["optim_group"]
        assert value["optim_reloaded"]
        assert value["sharded_keys"] == list(value["full"])
        types = value["sharded_types"]
        assert types["extra.weight"] == "Tensor" and types["fsdp.embed.weight"] == "ShardedTensor"
        assert value["sharded_loaded"] == value["full"]
