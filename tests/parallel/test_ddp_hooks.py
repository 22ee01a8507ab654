"""DDP's gradient hooks: which backward passes reduce (only those after a forward through
the wrapper, as torch's prepare_for_backward gates it), deep copies, re-wrapping, torch-style
comm-hook futures, and eval through the wrapper on uneven shards (real processes, tcp)."""

from __future__ import annotations

import copy

import pytest
from launcher import run_tcp

import dtrain as dt
import dtrain.nn as nn
import dtrain.parallel as dist

AVERAGED = [[1.5, 1.5], [1.5, 1.5]]  # ranks feed ones * 1 and ones * 2 to Linear(2, 2)


def test_only_a_backward_after_a_wrapper_forward_reduces():
    for rank, value in enumerate(run_tcp(2, "ddp_hook_workers:backward_paths").values()):
        assert value["wrapper"] == 1 and value["wrapper_grad"] == AVERAGED
        assert value["module_only"] == 0  # rank 0's backward through .module stayed local
        assert value["module_grad"] == ([[1.0, 1.0], [1.0, 1.0]] if rank == 0 else None)
        assert value["retained_second"] == 0
        assert value["after_no_grad_forward"] == 0
        assert value["probe"] == [1.0]


@pytest.mark.parametrize("use_subgroup", [False, True])
def test_a_deep_copy_of_a_wrapped_module_is_independent(use_subgroup):
    launch = run_tcp(2, "ddp_hook_workers:deep_copies", {"use_subgroup": use_subgroup})
    for rank, value in enumerate(launch.values()):
        assert value["independent"]
        if rank == 0:  # trained alone: its own gradient, and no collective started
            assert value["clone_grad"] == [[3.0, 3.0], [3.0, 3.0]]
        assert value["probe"] == [1.0]
        assert value["ddp_clone_grad"] == AVERAGED and value["ddp_clone_same_group"]


def test_wrapping_again_keeps_one_reduction_per_backward():
    for value in run_tcp(2, "ddp_hook_workers:rewrap").values():
        assert value["per_backward"] == [1, 1, 1]
        assert value["grads"] == [AVERAGED] * 3
        assert "wrapped again" in value["superseded"]
        assert value["hooks"] == [1, 0]  # one hook; none once the wrappers are collected


def test_torch_style_future_comm_hooks():
    for value in run_tcp(2, "ddp_hook_workers:future_hook").values():
        assert value == {"in_place": AVERAGED, "new_tensor": AVERAGED}


@pytest.mark.parametrize("broadcast_buffers", [True, False])
def test_eval_on_uneven_shards_through_the_wrapper(broadcast_buffers):
    args = {"broadcast_buffers": broadcast_buffers}
    values = run_tcp(2, "ddp_hook_workers:eval_uneven_batches", args).values()
    assert [v["seen"] for v in values] == [[5.0], [5.0]]
    same = values[0]["running_mean"] == values[1]["running_mean"]
    assert same is broadcast_buffers  # synced once, at the first eval forward


def test_one_process_deep_copy_and_state_dict_keys(monkeypatch):
    """World size 1: DDP is a pass-through; deep copies work, and a module whose own child
    is called ``module`` loads its state dict unchanged (the prefix is stripped only on a
    mismatch)."""
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "DTRAIN_SECRET"):
        monkeypatch.delenv(name, raising=False)

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = nn.Linear(2, 2)

        def forward(self, x: dt.Tensor) -> dt.Tensor:
            return self.module(x)

    dist.init_process_group("gloo")
    try:
        ddp = dist.DistributedDataParallel(Wrapper())
        state = ddp.state_dict()
        assert sorted(state) == ["module.bias", "module.weight"]
        assert ddp.load_state_dict(state).missing_keys == []
        plain = dist.DistributedDataParallel(nn.Linear(2, 2))
        prefixed = {f"module.{k}": v * 0 for k, v in plain.state_dict().items()}
        plain.load_state_dict(prefixed, assign=True)  # torch DDP's prefix: stripped
        assert plain.module.weight.tolist() == [[0.0, 0.0], [0.0, 0.0]]
        twin = copy.deepcopy(ddp)
        assert twin.module.module.weight is not ddp.module.module.weight
        twin(dt.ones(1, 2)).sum().backward()
        assert twin.module.module.bias.grad.tolist() == [1.0, 1.0]
    finally:
        dist.destroy_process_group()


def test_an_eval_forward_or_a_failed_backward_does_not_stop_the_reduction():
    values = list(run_tcp(2, "ddp_hook_workers:interrupted_steps").values())
    for rank, value in enumerate(values):
        assert value["eval_between"] == AVERAGED
        assert value["raised"] == "oom"
        assert value["after_raise"] == value["normal"]  # averaged again, as before the raise
        assert len(value["warned"]) == 1
        assert value["torch_hook"] == AVERAGED
        assert value["rank_call"] == [rank, "int"]
    assert values[0]["after_raise"] == values[1]["after_raise"]  # the ranks agree
