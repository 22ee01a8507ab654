"""``FullyShardedDataParallel`` (real processes, tcp): on 2 and 3 ranks, with parameter
counts the world size does not divide, FSDP's gathered parameters equal plain training on
the concatenated batch and DDP's; no_sync accumulation equals one big batch; full state
dicts round-trip; each rank holds about 1/world of the parameters. Argument errors and the
wrap policies run in one process."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from fsdp_workers import Block, TinyTransformer, make_model
from launcher import NO_MPIEXEC, have_mpiexec, run_mpi, run_tcp

import dtrain as dt
import dtrain.nn as nn
import dtrain.parallel as dist
from dtrain.distributed.fsdp import (
    CPUOffload,
    FlatParameter,
    MixedPrecision,
    ShardedStateDictConfig,
    ShardingStrategy,
    StateDictType,
)
from dtrain.distributed.fsdp import FullyShardedDataParallel as FSDP  # noqa: N817 - torch's idiom
from dtrain.distributed.fsdp.wrap import (
    ModuleWrapPolicy,
    size_based_auto_wrap_policy,
    transformer_auto_wrap_policy,
)

# float32 round-off: the same sums in a different order (per-rank means, then the average)
ATOL = 2e-6


def max_diff(a: dict, b: dict) -> float:
    assert list(a) == list(b)
    return max(float(np.abs(np.subtract(a[k], b[k])).max()) for k in a)


def check_shards(value: dict, world: int) -> None:
    """Each unit keeps ceil(numel / world) elements: about 1/world of the model."""
    expected = sorted(-(-n // world) for n in value["unit_numels"])
    assert sorted(value["shard_numels"]) == expected
    assert any(n % world for n in value["unit_numels"])  # some unit needs padding
    total = sum(value["unit_numels"])
    assert sum(value["shard_numels"]) < total / world + len(value["unit_numels"])


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize(
    "kind, policy, units",
    [("mlp", None, 1), ("mlp", "size", 3), ("tf", "module", 3), ("tf", "transformer", 3)],
)
@pytest.mark.parametrize("optimizer, clip", [("sgd", None), ("adamw", 0.5)])
def test_matches_plain_training_and_ddp(world, kind, policy, units, optimizer, clip):
    args = {"kind": kind, "policy": policy, "optimizer": optimizer, "strategy": "FULL_SHARD"}
    values = run_tcp(world, "fsdp_workers:parity", {**args, "clip": clip}).values()
    for value in values:
        assert value["units"] == units
        assert max_diff(value["fsdp"], value["plain"]) < ATOL
        assert max_diff(value["fsdp"], value["ddp"]) < ATOL
        assert value["fsdp"] == values[0]["fsdp"]  # every rank gathers the same model
        assert max_diff(value["fsdp"], value["initial"]) > 1e-2  # training moved it
        check_shards(value, world)
        if clip is not None:  # the same global norm, and clipping took effect
            for plain_norm, fsdp_norm, _ in value["norms"]:
                assert math.isclose(plain_norm, fsdp_norm, rel_tol=1e-5)
            assert max(n[0] for n in value["norms"]) > clip


def test_sync_module_states_takes_rank_0s_model():
    args = {"kind": "tf", "policy": "transformer", "optimizer": "sgd", "strategy": "FULL_SHARD"}
    values = run_tcp(3, "fsdp_workers:parity", {**args, "sync": True}).values()
    for value in values:
        assert max_diff(value["fsdp"], value["plain"]) < ATOL


@pytest.mark.skipif(not have_mpiexec(), reason=NO_MPIEXEC)
def test_matches_plain_training_under_mpiexec():
    args = {"kind": "tf", "policy": "module", "optimizer": "adamw", "strategy": "FULL_SHARD"}
    values = run_mpi(3, "fsdp_workers:parity", {**args, "clip": 0.5}).values()
    for value in values:
        assert max_diff(value["fsdp"], value["plain"]) < ATOL
        check_shards(value, 3)


@pytest.mark.parametrize("strategy", ["SHARD_GRAD_OP", "NO_SHARD"])
def test_other_strategies_match(strategy):
    args = {"kind": "tf", "policy": "module", "optimizer": "adamw", "strategy": strategy}
    values = run_tcp(3, "fsdp_workers:parity", {**args, "clip": 0.5}).values()
    for value in values:
        assert max_diff(value["fsdp"], value["plain"]) < ATOL
        assert max_diff(value["fsdp"], value["ddp"]) < ATOL
        if strategy == "NO_SHARD":  # every rank keeps every element
            assert value["shard_numels"] == value["unit_numels"]
        else:
            check_shards(value, 3)


@pytest.mark.parametrize("world, kind, policy", [(2, "mlp", None), (3, "tf", "transformer")])
def test_no_sync_accumulation_equals_one_big_batch(world, kind, policy):
    values = run_tcp(world, "fsdp_workers:accumulate", {"kind": kind, "policy": policy}).values()
    for value in values:
        assert max_diff(value["fsdp"], value["plain"]) < ATOL


@pytest.mark.parametrize("world, kind, policy", [(2, "tf", "module"), (3, "mlp", "size")])
def test_full_state_dict_round_trip(world, kind, policy):
    values = run_tcp(world, "fsdp_workers:state_round_trip", {"kind": kind, "policy": policy})
    values = values.values()
    zero = values[0]
    # rank0_only: rank 0 gets the original module's keys; loads into the plain model
    assert zero["saved_keys"] == zero["plain_keys"]
    assert all(v["saved_keys"] == [] for v in values[1:])
    assert zero["plain_after_load"] == zero["everyone"]
    for value in values:
        assert value["everyone"] == zero["everyone"]
        assert value["load_result"] == [[], []]
        assert value["loaded"] == value["other"]  # load_state_dict shards it exactly
        assert max_diff(value["trained_fsdp"], value["trained_other"]) < ATOL
        # summon_full_params exposes the original names; writeback kept the change
        assert [n for n in value["summoned_names"] if not n.endswith("_flat_param")]
        assert all(n.endswith("_flat_param") for n in value["names_outside"])
        first = next(iter(value["trained_fsdp"]))
        np.testing.assert_allclose(
            value["after_writeback"][first], 2 * np.asarray(value["trained_fsdp"][first])
        )
        for key in list(value["trained_fsdp"])[1:]:
            assert value["after_writeback"][key] == value["trained_fsdp"][key]


# ---- one process ----------------------------------------------------------------------------
@pytest.fixture
def one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "DTRAIN_SECRET"):
        monkeypatch.delenv(name, raising=False)
    dist.init_process_group("gloo")
    yield
    dist.destroy_process_group()


def test_one_process_equals_the_plain_model(one_process):
    plain, fsdp = make_model("mlp"), FSDP(make_model("mlp"))
    params = list(fsdp.parameters())
    assert len(params) == 1 and isinstance(params[0], FlatParameter)
    assert params[0].numel() == 25 + 42 + 16
    opts = [dt.optim.SGD(m.parameters(), lr=0.1) for m in (plain, fsdp)]
    x = dt.tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4))
    for _ in range(2):
        for model, opt in zip((plain, fsdp), opts):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    got = fsdp.state_dict()
    for key, value in plain.state_dict().items():
        np.testing.assert_allclose(got[key].numpy(), value.numpy(), atol=1e-6, rtol=0)
    with (
        pytest.raises(RuntimeError, match="inside summon_full_params"),
        FSDP.summon_full_params(fsdp),
    ):
        fsdp(x)
    assert isinstance(fsdp[0], nn.Linear)  # indexing and attributes reach the module
    assert fsdp.module is fsdp._fsdp_wrapped_module


def test_nested_units_and_policies(one_process):
    model = FSDP(make_model("tf"), auto_wrap_policy=ModuleWrapPolicy({Block}))
    units = FSDP.fsdp_modules(model)
    assert len(units) == 3 and FSDP.fsdp_modules(model, root_only=True) == [model]
    assert [u._handle.numel for u in units] == [149, 559, 559]
    with pytest.raises(RuntimeError, match="root FSDP"):
        units[1].clip_grad_norm_(1.0)
    assert isinstance(model.module.blocks[0], FSDP)
    # the wrapped model's state dict keys are the plain model's
    assert list(model.state_dict()) == list(TinyTransformer().state_dict())
    # size policy: Linear(4, 5) and Linear(5, 7) reach 20 parameters; the root keeps the rest
    sized = FSDP(
        make_model("mlp"),
        auto_wrap_policy=functools.partial(size_based_auto_wrap_policy, min_num_params=20),
    )
    assert [u._handle.numel for u in FSDP.fsdp_modules(sized)] == [16, 25, 42]
    assert (
        size_based_auto_wrap_policy(nn.ModuleList(), recurse=False, nonwrapped_numel=10**9) is False
    )
    assert transformer_auto_wrap_policy(Block(), False, 0, transformer_layer_cls={Block})


def test_a_module_used_twice_is_stored_once(one_process):
    """A module reachable by two paths (weights tied): its parameters are flattened once,
    both uses add to their gradient, and the state dict names both paths, as the plain one."""

    def tied() -> nn.Module:
        dt.manual_seed(4)
        layer = nn.Linear(5, 5)
        return nn.Sequential(layer, nn.Tanh(), layer)

    plain, fsdp = tied(), FSDP(tied())
    assert [p.numel() for p in fsdp.parameters()] == [30]
    x = dt.ones(2, 5)
    for model in (plain, fsdp):
        dt.optim.SGD(model.parameters(), lr=0.5).zero_grad()
        model(x).pow(2).sum().backward()
    plain_grad = np.concatenate([p.grad.numpy().ravel() for p in plain.parameters()])
    np.testing.assert_allclose(next(fsdp.parameters()).grad.numpy(), plain_grad, atol=1e-6)
    assert (
        list(fsdp.state_dict())
        == list(plain.state_dict())
        == ["0.weight", "0.bias", "2.weight", "2.bias"]
    )


def test_bad_arguments():
    model = make_model("mlp")
    with pytest.raises(NotImplementedError, match="use_orig_params"):
        FSDP(model, use_orig_params=True)
    with pytest.raises(NotImplementedError, match="CPUOffload"):
        FSDP(model, cpu_offload=CPUOffload(offload_params=True))
    with pytest.raises(NotImplementedError, match="MixedPrecision"):
        FSDP(model, mixed_precision=MixedPrecision(param_dtype=dt.float16))
    with pytest.raises(NotImplementedError, match="HYBRID_SHARD"):
        FSDP(model, sharding_strategy=ShardingStrategy.HYBRID_SHARD)
    with pytest.raises(NotImplementedError, match="_use_dtensor"):
        FSDP.set_state_dict_type(
            model, StateDictType.SHARDED_STATE_DICT, ShardedStateDictConfig(_use_dtensor=True)
        )
    with pytest.raises(TypeError, match="FullOptimStateDictConfig"):
        FSDP.set_state_dict_type(
            model, StateDictType.FULL_STATE_DICT, None, ShardedStateDictConfig()
        )
    with pytest.raises(TypeError, match=r"not an nn\.Module class"):
        ModuleWrapPolicy({"Linear"})
    with pytest.raises(TypeError, match=r"wraps an nn\.Module"):
        FSDP(3)


def test_the_gpu_check_worker_runs_on_the_cpu():
    # The worker test_gpu_nccl.py runs over nccl on the GPU machine, here over tcp on the
    # CPU, so that what reaches the GPU machine has run once.
    launch = run_tcp(2, "gpu_workers:fsdp_matches_plain", {"backend": "tcp", "device": "cpu"})
    for value in launch.values():
        assert value["on_device"] and value["shards"] == 2
        assert value["worst"] < 1e-5, value


def test_the_gpu_check_checkpoint_worker_runs_on_the_cpu(tmp_path):
    folder = str(tmp_path / "ckpt")
    launch = run_tcp(
        2,
        "gpu_workers:fsdp_checkpoint_resumes",
        {"folder": folder, "backend": "tcp", "device": "cpu"},
    )
    for value in launch.values():
        assert value["on_device"] and value["worst"] == 0.0, value
        assert value["keys"] == ["0.bias", "0.weight", "2.bias", "2.weight"]


# ---- regressions: no_sync and zero_grad, checkpointing, summon names, ties ------------------
def test_zero_grad_drops_what_no_sync_accumulated():
    for value in run_tcp(2, "fsdp_workers:zero_grad_after_no_sync", {}).values():
        for how in ("optimizer", "module", "in_place"):
            for got, fresh in zip(value[how], value["fresh"]):
                np.testing.assert_allclose(got, fresh, atol=1e-7)
        # DDP gives the same (its gradients are whole, the shards are pieces of them)
        assert value["optimizer_ddp"] == value["module_ddp"]


def test_activation_checkpointing_inside_units_matches_plain_training():
    for value in run_tcp(2, "fsdp_workers:checkpoint_inside_units", {}).values():
        assert value["units"] == 3
        assert max_diff(value["fsdp"], value["plain"]) < ATOL
        assert value["bound"] == []  # the views gathered again in backward are let go


def test_summon_full_params_names_the_original_parameters(one_process):
    model = FSDP(make_model("tf"), auto_wrap_policy=ModuleWrapPolicy({Block}))
    plain = make_model("tf")
    with FSDP.summon_full_params(model):
        names = [n for n, _ in model.named_parameters()]
        assert names == [n for n, _ in plain.named_parameters()]
        assert not any(isinstance(p, FlatParameter) for p in model.parameters())
        weight = dict(model.named_parameters())["blocks.0.qkv.weight"]
        np.testing.assert_array_equal(
            weight.detach().numpy(), plain.blocks[0].qkv.weight.detach().numpy()
        )
    assert [type(p) for p in model.parameters()] == [FlatParameter] * 3
    assert next(model.named_parameters())[0] == "_flat_param"


def test_a_parameter_tied_across_units_is_refused(one_process):
    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.head = nn.Embedding(7, 4), nn.Linear(4, 7, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, t: dt.Tensor) -> dt.Tensor:
            return self.head(self.embed(t))

    with pytest.raises(ValueError, match=r"'embed\.weight' is tied to Linear\.weight .*'head'"):
        FSDP(LM(), auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))
    with pytest.raises(ValueError, match="tied to"):  # two sibling units
        FSDP(LM(), auto_wrap_policy=ModuleWrapPolicy({nn.Linear, nn.Embedding}))
    # in one unit the tie is kept: one copy, trained once
    plain, fsdp = LM(), FSDP(LM())
    fsdp.load_state_dict(plain.state_dict())
    assert [p.numel() for p in fsdp.parameters()] == [28]
    tokens = dt.tensor(np.array([[1, 2, 3]]))
    for model in (plain, fsdp):
        opt = dt.optim.SGD(model.parameters(), lr=0.5)
        model(tokens).pow(2).sum().backward()
        opt.step()
    state = fsdp.state_dict()
    np.testing.assert_allclose(
        state["head.weight"].numpy(), plain.head.weight.detach().numpy(), atol=1e-6
    )
    np.testing.assert_array_equal(state["embed.weight"].numpy(), state["head.weight"].numpy())


def test_clip_grad_norm_keeps_float64(one_process):
    dt.manual_seed(0)
    plain = nn.Linear(30, 20).double()
    fsdp = FSDP(nn.Linear(30, 20).double())
    fsdp.load_state_dict(plain.state_dict())
    x = dt.tensor(np.random.default_rng(0).standard_normal((5, 30)))
    for model in (plain, fsdp):
        model(x).pow(2).sum().backward()
    expected = nn.utils.clip_grad_norm_(plain.parameters(), 0.1)
    got = fsdp.clip_grad_norm_(0.1)
    assert got.dtype == dt.float64
    assert abs(float(got) - float(expected)) < 1e-10 * float(expected)
    plain_grad = np.concatenate([p.grad.numpy().ravel() for p in plain.parameters()])
    np.testing.assert_allclose(next(fsdp.parameters()).grad.numpy(), plain_grad, rtol=1e-12)


def test_mixing_frozen_and_trainable_names_both(one_process):
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    model[1].requires_grad_(False)
    with pytest.raises(ValueError, match=r"frozen: Linear\.weight, Linear\.bias; trainable"):
        FSDP(model)
