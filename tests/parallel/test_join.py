"""``DistributedDataParallel.join()`` on uneven inputs (real processes, tcp): no hang, the
averaged updates a hand computation gives, equal models on every rank at the end."""

from __future__ import annotations

import numpy as np
import pytest
from join_workers import LR, batches, initial_parameters
from launcher import run_tcp

import dtrain.parallel as dist

SLACK = 1e-5  # float32 round-off over a few SGD steps


def reference(counts: list, divide_by_initial_world_size: bool) -> tuple:
    """The join semantics by hand: at step k the ranks with more than k batches are active;
    the gradient is the sum of their MSE gradients over the world size (or their number)."""
    weight, bias = (a.astype(np.float64) for a in initial_parameters())
    data = [batches(rank, count) for rank, count in enumerate(counts)]
    for step in range(max(counts)):
        active = [rank for rank, count in enumerate(counts) if count > step]
        grad_w, grad_b = np.zeros_like(weight), np.zeros_like(bias)
        for rank in active:
            x, t = data[rank][step]
            err = x @ weight.T + bias - t  # d mean((y - t)^2) / dy = 2 err / err.size
            grad_w += 2 * err.T @ x / err.size
            grad_b += 2 * err.sum(0) / err.size
        divisor = len(counts) if divide_by_initial_world_size else len(active)
        weight -= LR * grad_w / divisor
        bias -= LR * grad_b / divisor
    return weight, bias


def _check_equal_and_reference(values: list, counts: list, divide: bool, buckets: int = 2) -> None:
    weight, bias = reference(counts, divide)
    for value in values:
        assert value["error"] is None
        assert value["buckets"] == buckets  # one a parameter: all-reduces to shadow in order
        assert value["weight"] == values[0]["weight"] and value["bias"] == values[0]["bias"]
        np.testing.assert_allclose(value["weight"], weight, atol=SLACK, rtol=0)
        np.testing.assert_allclose(value["bias"], bias, atol=SLACK, rtol=0)
        assert value["probe"] == [len(counts) * (len(counts) + 1) / 2]


def test_the_reference_is_not_plain_averaging():
    """The two divisors give different models on uneven inputs (so the tests tell them
    apart), and the same one on even inputs."""
    uneven = [reference([3, 1, 2], divide)[0] for divide in (True, False)]
    assert np.abs(uneven[0] - uneven[1]).max() > 1e-3
    even = [reference([2, 2], divide)[0] for divide in (True, False)]
    np.testing.assert_allclose(even[0], even[1])


@pytest.mark.parametrize("divide", [True, False])
def test_uneven_batches_match_the_hand_computed_updates(divide):
    counts = [3, 1, 2]
    args = {"counts": counts, "divide_by_initial_world_size": divide}
    _check_equal_and_reference(run_tcp(3, "join_workers:train", args).values(), counts, divide)


@pytest.mark.parametrize("divide", [True, False])
def test_a_rank_with_no_batches(divide):
    counts = [0, 2]
    args = {"counts": counts, "divide_by_initial_world_size": divide}
    _check_equal_and_reference(run_tcp(2, "join_workers:train", args).values(), counts, divide)


def test_unused_parameters_and_eval_forwards_are_shadowed():
    """find_unused_parameters (the used flags ride on the buckets) and a no_grad forward
    after each step (buffers only, no backward to shadow)."""
    counts = [1, 3]
    args = {"counts": counts, "find_unused_parameters": True, "eval_every_step": True}
    values = run_tcp(2, "join_workers:train", args).values()
    _check_equal_and_reference(values, counts, True, buckets=4)


@pytest.mark.parametrize("counts", [[2, 2], [3, 1, 2]])
def test_an_eval_forward_between_forward_and_backward(counts):
    """A no_grad forward between a training forward and its backward leaves that backward
    averaged (as outside join) on even inputs, and the joined ranks still shadow it."""
    args = {"counts": counts, "eval_between": True}
    values = run_tcp(len(counts), "join_workers:train", args).values()
    _check_equal_and_reference(values, counts, True)
    for step in range(min(counts)):  # while every rank is active, each step's grads agree
        assert all(v["grads"][step] == values[0]["grads"][step] for v in values)


def test_a_comm_hook_is_shadowed():
    """fp16_compress_hook inside join: the joined ranks run it on zeros (float16 round-off
    on the hand-computed updates)."""
    counts = [3, 1, 2]
    values = run_tcp(3, "join_workers:train", {"counts": counts, "fp16_hook": True}).values()
    weight, _ = reference(counts, True)
    for value in values:
        assert value["error"] is None and value["weight"] == values[0]["weight"]
        np.testing.assert_allclose(value["weight"], weight, atol=2e-3, rtol=0)
        assert value["probe"] == [6.0]


def test_active_ranks_that_disagree_raise_on_every_rank():
    values = run_tcp(3, "join_workers:disagree", {"counts": [2, 2, 1]}).values()
    for value in values:
        assert "2 of 3 active ranks reduce gradients" in value["error"], value
        assert value["probe"] == [3.0]


def test_join_mode_starts_when_the_block_is_entered():
    """``model.join()`` not yet entered: a step is plain DDP's (one all-reduce for the one
    bucket); inside the block it adds the notify and the step exchange."""
    for value in run_tcp(2, "join_workers:not_entered").values():
        assert not value["enabled_before"] and value["enabled_inside"]
        assert not value["enabled_after"]
        assert value["collectives"][1] == value["collectives"][0] + 2


def test_buffers_are_broadcast_and_equal_at_the_end():
    values = run_tcp(3, "join_workers:train", {"counts": [2, 4, 1], "batchnorm": True}).values()
    for value in values:
        assert value["error"] is None
        assert value["buffers"] == values[1]["buffers"]  # the last rank to join gave them
        assert value["weight"] == values[0]["weight"]
    assert values[0]["buffers"][-1] == 4  # num_batches_tracked: rank 1's four steps


def test_throw_on_early_termination_raises_on_every_rank():
    args = {"counts": [1, 3, 2], "throw_on_early_termination": True}
    values = run_tcp(3, "join_workers:train", args).values()
    assert values[0]["error"] == "Rank 0 exhausted all inputs."
    for value in values[1:]:
        assert value["error"] == (
            "Detected at least one rank that exhausted inputs. Throwing across all ranks."
        )
    for value in values:
        assert value["probe"] == [6.0]
    # One step ran before rank 0 ran out: every rank holds that step's model.
    assert values[1]["weight"] == values[0]["weight"] == values[2]["weight"]


def test_even_inputs_with_throw_do_not_raise():
    args = {"counts": [2, 2], "throw_on_early_termination": True}
    for value in run_tcp(2, "join_workers:train", args).values():
        assert value["error"] is None


def test_join_config_and_arguments_one_process(monkeypatch):
    """One process: the context turns the DDP's join config on and off again; an empty
    Join is refused."""
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "DTRAIN_SECRET"):
        monkeypatch.delenv(name, raising=False)
    import dtrain.nn as nn

    dist.init_process_group("gloo")
    try:
        model = dist.DistributedDataParallel(nn.Linear(2, 2))
        assert not model._join_config.enable
        context = model.join(throw_on_early_termination=True)
        assert not model._join_config.enable  # on from entry to exit only
        with context:
            assert isinstance(context, dist.Join)
            assert model._join_config.enable and model._join_config.is_first_joinable
            assert model._join_config.throw_on_early_termination
        assert not model._join_config.enable
        from dtrain.distributed.algorithms.join import Join, Joinable, JoinHook

        assert (Join, Joinable, JoinHook) == (dist.Join, dist.Joinable, dist.JoinHook)
        with pytest.raises(ValueError, match="at least one joinable"):
            dist.Join([])
        with pytest.raises(TypeError, match=r"Joinable\.__init__"):
            dist.Join([object()])
    finally:
        dist.destroy_process_group()
