"""``ZeroRedundancyOptimizer`` (real processes, tcp): the same parameters as DDP with the
full optimizer, state for the own shard only, state dicts in the plain optimizer's layout,
uneven inputs under ``Join``, and argument errors (one process)."""

from __future__ import annotations

import numpy as np
import pytest
from launcher import free_port, run_tcp

import dtrain as dt
import dtrain.nn as nn
import dtrain.parallel as dist
from dtrain.distributed.optim import ZeroRedundancyOptimizer

SIZES = [40, 8, 24, 3, 3]  # zero_workers.make_model's parameters, in order


def greedy(sizes: list, world_size: int) -> list:
    """torch's partition by hand: largest first, each to the rank with the fewest elements."""
    totals, owners = [0] * world_size, [[] for _ in range(world_size)]
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        rank = totals.index(min(totals))
        owners[rank].append(i)
        totals[rank] += sizes[i]
    return [sorted(o) for o in owners]


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_matches_ddp_with_the_full_optimizer(world_size, optimizer):
    values = run_tcp(
        world_size, "zero_workers:parity", {"optimizer": optimizer, "steps": 4}
    ).values()
    shards = greedy(SIZES, world_size)
    for rank, value in enumerate(values):
        assert value["zero"] == values[0]["zero"]  # every rank holds every updated parameter
        for a, b in zip(value["zero"], value["full"]):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
        assert value["local"] == value["state"] == shards[rank]  # state for its shard only
        assert value["all"] == list(range(len(SIZES)))  # param_groups: every parameter
    initial = [p.tolist() for p in __import__("zero_workers").make_model().parameters()]
    assert any(np.abs(np.subtract(a, b)).max() > 1e-3 for a, b in zip(initial, values[0]["zero"]))
    if optimizer == "adam":  # the local optimizer's defaults show in param_groups
        assert values[0]["options"]["betas"] == [0.9, 0.999]
        assert values[0]["options"]["weight_decay"] == 0.01


def test_the_partition_is_balanced():
    assert greedy(SIZES, 2) == [[0], [1, 2, 3, 4]]
    assert greedy(SIZES, 3) == [[0], [2], [1, 3, 4]]


@pytest.mark.parametrize("to", [0, 1])
def test_state_dict_round_trip(tmp_path, to):
    """Consolidated on rank ``to``: the plain Adam's state dict after the same steps (a
    group added midway); loaded into a new ZeRO and into a plain Adam, both continue
    exactly as the original; every other rank's state_dict() raises."""
    args = {"path": str(tmp_path / "zero.pt"), "to": to}
    values = run_tcp(3, "zero_workers:state_round_trip", args).values()
    shards = greedy(SIZES, 3)
    shards[2] += [5, 6]  # the added Linear(2, 2)'s 4 and 2 elements: to the lightest rank
    for rank, value in enumerate(values):
        expected_errors = 1 if rank == to else 2
        assert len(value["errors"]) == expected_errors
        assert all(f"consolidate_state_dict(to={rank})" in e for e in value["errors"])
        assert value["loaded_lr"] == [0.05, 0.02, 0.05, 0.02]
        assert value["loaded_state"] == shards[rank]  # the new ZeRO's state: its shard only
        zero, full, zero2, plain = value["params"]
        assert zero == values[0]["params"][0]
        for other in (full, zero2, plain):
            for a, b in zip(zero, other):
                np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    assert values[to]["same_format"] and values[to]["state_keys"] == list(range(7))


@pytest.mark.parametrize("with_ddp", [True, False])
@pytest.mark.parametrize("counts", [[3, 1, 2], [0, 2]])
def test_join_with_uneven_inputs(counts, with_ddp):
    """torch's Join tutorial pattern, Join([model, zero]) (or Join([zero]) alone): every
    rank finishes, in step (the probe all-reduce), with the same parameters."""
    args = {"counts": counts, "with_ddp": with_ddp}
    values = run_tcp(len(counts), "zero_workers:join", args).values()
    n = len(counts)
    for value in values:
        assert value["probe"] == [n * (n + 1) / 2]
        assert value["params"] == values[0]["params"]


@pytest.fixture
def torch():
    """The ``torch`` module, or a skip when it is not installed (CI has none)."""
    return pytest.importorskip("torch")


@pytest.fixture
def one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "DTRAIN_SECRET"):
        monkeypatch.delenv(name, raising=False)
    dist.init_process_group("gloo")
    yield
    dist.destroy_process_group()


def test_one_process_equals_the_plain_optimizer(one_process):
    models = []
    for _ in range(2):
        dt.manual_seed(0)
        models.append(nn.Linear(3, 2))
    zero = ZeroRedundancyOptimizer(models[0].parameters(), dt.optim.SGD, lr=0.1, momentum=0.5)
    plain = dt.optim.SGD(models[1].parameters(), lr=0.1, momentum=0.5)
    for step in range(3):
        for model, opt in zip(models, (zero, plain)):
            opt.zero_grad()
            model(dt.full((2, 3), float(step + 1))).pow(2).sum().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    zero.zero_grad()
    assert all(p.grad is None for p in models[0].parameters())
    zero.consolidate_state_dict()
    state = zero.state_dict()
    assert sorted(state["state"]) == [0, 1]
    np.testing.assert_array_equal(
        state["state"][0]["momentum_buffer"].numpy(),
        plain.state_dict()["state"][0]["momentum_buffer"].numpy(),
    )
    assert isinstance(zero, dist.Joinable) and zero.join_process_group is not None
    loss = zero.step(lambda: 1.5)  # the closure's value comes back
    assert loss == 1.5


def test_bad_arguments(one_process):
    params = list(nn.Linear(2, 2).parameters())
    with pytest.raises(NotImplementedError, match="overlap_with_ddp=False"):
        ZeroRedundancyOptimizer(params, dt.optim.SGD, overlap_with_ddp=True, lr=0.1)
    with pytest.raises(TypeError, match="got a Tensor"):
        ZeroRedundancyOptimizer(params[0], dt.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        ZeroRedundancyOptimizer([], dt.optim.SGD, lr=0.1)
    with pytest.raises(TypeError, match="all Tensors or all dicts"):
        ZeroRedundancyOptimizer([params[0], {"params": [params[1]]}], dt.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="no 'params' key"):
        ZeroRedundancyOptimizer([{"lr": 0.1}], dt.optim.SGD, lr=0.1)
    with pytest.raises(TypeError, match="params is a set, whose order differs between ranks"):
        ZeroRedundancyOptimizer(set(params), dt.optim.SGD, lr=0.1)
    with pytest.raises(TypeError, match="group 0's params is a set"):
        ZeroRedundancyOptimizer([{"params": set(params)}], dt.optim.SGD, lr=0.1)
    with pytest.raises(TypeError, match="Optimizer subclass"):
        ZeroRedundancyOptimizer(params, "sgd", lr=0.1)
    mixed = [params[0], dt.zeros(2, dtype=dt.float64, requires_grad=True)]
    with pytest.raises(ValueError, match="one dtype on one device"):
        ZeroRedundancyOptimizer(mixed, dt.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        ZeroRedundancyOptimizer(params, dt.optim.SGD, lr=-1.0)
    zero = ZeroRedundancyOptimizer(params, dt.optim.SGD, lr=0.1)
    with pytest.raises(RuntimeError, match=r"consolidate_state_dict\(to=0\)"):
        zero.state_dict()
    with pytest.raises(ValueError, match="to=3 is not a rank"):
        zero.consolidate_state_dict(to=3)


def test_torch_state_dict_layout(one_process, torch):
    """One rank: torch's ZeRO state dict and ours have the same keys and groups."""
    import torch.distributed as tdist
    from torch.distributed.optim import ZeroRedundancyOptimizer as TorchZeRO

    tdist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
    )
    try:
        ours_model = nn.Linear(3, 2)
        theirs_model = torch.nn.Linear(3, 2)
        ours = ZeroRedundancyOptimizer(ours_model.parameters(), dt.optim.Adam, lr=0.1)
        theirs = TorchZeRO(theirs_model.parameters(), torch.optim.Adam, lr=0.1)
        ours_model(dt.ones((1, 3))).sum().backward()
        theirs_model(torch.ones((1, 3))).sum().backward()
        for opt in (ours, theirs):
            opt.step()
            opt.consolidate_state_dict()
        a, b = ours.state_dict(), theirs.state_dict()
        assert sorted(a["state"]) == sorted(b["state"]) == [0, 1]
        assert sorted(a["state"][0]) == sorted(b["state"][0])
        assert a["param_groups"][0]["params"] == b["param_groups"][0]["params"]
        assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"]
    finally:
        tdist.destroy_process_group()
