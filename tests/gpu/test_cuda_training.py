"""Training on the GPU: whole steps on cuda against the same steps on the CPU, and a step
captured as a CUDA graph against the eager step (marked ``gpu``; skipped without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain as dt
import dtrain.cuda
import dtrain.nn.functional as F
from dtrain import nn

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy"),
]


def _mlp(seed: int = 0) -> nn.Module:
    dt.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(30, 64), nn.GELU(), nn.LayerNorm(64), nn.Linear(64, 64), nn.ReLU(),
        nn.Linear(64, 7),
    )  # fmt: skip


def _batches(count: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((32, 30)).astype(np.float32), rng.integers(0, 7, 32))
        for _ in range(count)
    ]


OPTIMIZERS = {
    "sgd": lambda p: dt.optim.SGD(p, lr=0.05),
    "sgd-momentum": lambda p: dt.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda p: dt.optim.Adam(p, lr=1e-2),
    "adamw": lambda p: dt.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    # As in PyTorch, Adam keeps its step count on the GPU only when asked to, and a
    # captured step needs that (the bias correction changes every replay).
    "adam-capturable": lambda p: dt.optim.Adam(p, lr=1e-2, capturable=True),
}


def _train(device: str, optimizer_name: str, steps: int = 5) -> list[np.ndarray]:
    model = _mlp().to(device)
    optimizer = OPTIMIZERS[optimizer_name](model.parameters())
    for x, y in _batches(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(dt.tensor(x, device=device)), dt.tensor(y, device=device))
        loss.backward()
        optimizer.step()
    return [p.detach().cpu().numpy() for p in model.parameters()]


@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
def test_training_on_cuda_matches_cpu(optimizer_name):
    on_gpu = _train("cuda", optimizer_name)
    on_cpu = _train("cpu", optimizer_name)
    for gpu, cpu in zip(on_gpu, on_cpu):
        np.testing.assert_allclose(gpu, cpu, rtol=2e-4, atol=2e-5)


def test_module_moves_and_state_dict_comes_back_to_cpu(tmp_path):
    model = _mlp().to("cuda")
    assert all(p.is_cuda for p in model.parameters())
    path = tmp_path / "model.safetensors"
    dt.save(model.state_dict(), str(path))
    restored = _mlp(seed=5)
    restored.load_state_dict(dt.load(str(path)))
    for p, q in zip(model.parameters(), restored.parameters()):
        np.testing.assert_array_equal(p.detach().cpu().numpy(), q.detach().numpy())
    assert not any(p.is_cuda for p in model.cpu().parameters())


def test_char_gpt_loss_and_gradients_on_cuda_match_cpu():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    from char_gpt import GPT

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 40, size=(4, 17))
    results = {}
    for device in ("cpu", "cuda"):
        dt.manual_seed(0)
        model = GPT(40, 16, 32, 2, 4, dropout=0.0).to(device)
        x = dt.tensor(tokens[:, :-1], device=device)
        y = dt.tensor(tokens[:, 1:], device=device)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, 40), y.reshape(-1))
        loss.backward()
        results[device] = (loss.item(), [p.grad.cpu().numpy() for p in model.parameters()])
    assert abs(results["cuda"][0] - results["cpu"][0]) < 1e-5
    for gpu, cpu in zip(results["cuda"][1], results["cpu"][1]):
        np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-5)


def _graph_vs_eager(optimizer_name: str, steps: int = 6, clip: bool = False) -> None:
    # The model's LayerNorm, the loss's mean and (with clip) the gradient norm are
    # reductions finished by their last block, on the capture stream's own counter.
    batches = _batches(steps + 2, seed=3)
    # Eager reference.
    eager = _mlp().to("cuda")
    eager_opt = OPTIMIZERS[optimizer_name](eager.parameters())
    for x, y in batches:
        eager_opt.zero_grad(set_to_none=True)
        F.cross_entropy(eager(dt.tensor(x, device="cuda")), dt.tensor(y, device="cuda")).backward()
        if clip:
            dt.nn.utils.clip_grad_norm_(eager.parameters(), 0.5)
        eager_opt.step()
    # The same steps: two eager warm-up steps, then the rest replayed from one capture.
    model = _mlp().to("cuda")
    optimizer = OPTIMIZERS[optimizer_name](model.parameters())
    static_x = dt.zeros((32, 30), device="cuda")
    static_y = dt.zeros(32, dtype=dt.int64, device="cuda")

    def step() -> dt.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(static_x), static_y)
        loss.backward()
        if clip:
            dt.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
        return loss

    for x, y in batches[:2]:
        static_x.copy_(dt.tensor(x, device="cuda"))
        static_y.copy_(dt.tensor(y, device="cuda"))
        step()
    optimizer.zero_grad(set_to_none=True)
    graph = dt.cuda.CUDAGraph()
    with dt.cuda.graph(graph):
        static_loss = step()
    losses = []
    for x, y in batches[2:]:
        static_x.copy_(dt.tensor(x, device="cuda"))
        static_y.copy_(dt.tensor(y, device="cuda"))
        graph.replay()
        losses.append(static_loss.item())
    assert len(set(losses)) == len(losses)  # each replay computed a new loss
    for p, q in zip(model.parameters(), eager.parameters()):
        np.testing.assert_allclose(
            p.detach().cpu().numpy(), q.detach().cpu().numpy(), rtol=1e-4, atol=1e-6
        )


@pytest.mark.parametrize("optimizer_name", ["sgd", "sgd-momentum"])
def test_captured_step_replays_like_the_eager_step(optimizer_name):
    _graph_vs_eager(optimizer_name)


def test_captured_adam_step_replays_like_the_eager_step():
    _graph_vs_eager("adam-capturable")


def test_captured_clipped_step_replays_like_the_eager_step():
    _graph_vs_eager("sgd-momentum", clip=True)


def test_captured_graph_lists_its_kernels():
    from dtrain.runtime.cuda_graph import node_counts

    x = dt.randn(8, 16, device="cuda")
    norm = nn.LayerNorm(16).to("cuda")
    norm(x)  # compiled before the capture
    graph = dt.cuda.CUDAGraph()
    with dt.cuda.graph(graph):
        (norm(x) * 2.0).sum()
    counts = node_counts(graph.debug_dot())
    assert counts["layer_norm_forward"] == 1, counts
    assert 3 <= sum(counts.values()) <= 6, counts  # LayerNorm, multiply, sum (and memsets)
    assert "layer_norm_forward" in graph.debug_dot(verbose=True)


def test_failed_capture_leaves_the_gpu_usable():
    x = dt.ones(8, device="cuda")
    graph = dt.cuda.CUDAGraph()
    with pytest.raises(Exception), dt.cuda.graph(graph):  # noqa: B017 - cupy's error type
        (x * 2).sum().item()  # a host sync: not capturable
    assert not dt.cuda.is_current_stream_capturing()
    assert (x * 3).sum().item() == 24.0
    with pytest.raises(RuntimeError, match="nothing was captured"):
        graph.replay()


def test_out_of_range_target_on_cuda_is_nan_or_an_error_in_debug_mode(monkeypatch):
    logits = dt.zeros((3, 4), device="cuda")
    target = dt.tensor([0, 7, 1], device="cuda")
    # No host check by default (it would stall the GPU): the bad row makes the loss NaN.
    assert np.isnan(F.cross_entropy(logits, target).item())
    monkeypatch.setenv("DTRAIN_DEBUG", "1")
    with pytest.raises(IndexError, match="target 7 is out of range"):
        F.cross_entropy(logits, target)


@pytest.mark.parametrize("max_norm", [0.3, 1e6])
def test_clip_grad_norm_on_cuda_matches_cpu_and_never_syncs(max_norm):
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(70, 300), (300,), (5, 7, 9)]]
    results = {}
    for device in ("cpu", "cuda"):
        params = [dt.tensor(a, device=device, requires_grad=True) for a in arrays]
        for p, a in zip(params, arrays):
            p.grad = dt.tensor(a, device=device)
        norm = dt.nn.utils.clip_grad_norm_(params, max_norm)
        results[device] = (float(norm), [p.grad.cpu().numpy() for p in params])
    assert abs(results["cuda"][0] - results["cpu"][0]) < 1e-4 * results["cpu"][0]
    for gpu, cpu in zip(results["cuda"][1], results["cpu"][1]):
        np.testing.assert_allclose(gpu, cpu, rtol=1e-5, atol=1e-7)
    # Capturable: the clip inside a CUDA graph replays on new gradients.
    grads = [dt.tensor(a, device="cuda") for a in arrays]
    params = [dt.zeros(a.shape, device="cuda", requires_grad=True) for a in arrays]
    for p, g in zip(params, grads):
        p.grad = g
    graph = dt.cuda.CUDAGraph()
    with dt.cuda.graph(graph):
        dt.nn.utils.clip_grad_norm_(params, max_norm)
    for p, a in zip(params, arrays):
        p.grad.copy_(dt.tensor(a, device="cuda"))
    graph.replay()
    for p, cpu in zip(params, results["cpu"][1]):
        np.testing.assert_allclose(p.grad.cpu().numpy(), cpu, rtol=1e-5, atol=1e-7)


def test_embedding_refuses_indices_on_another_device():
    weight = dt.randn(10, 4, device="cuda", requires_grad=True)
    with pytest.raises(RuntimeError, match="indices on cpu but the weight on cuda:0"):
        F.embedding(dt.tensor([1, 2]), weight)
    assert F.embedding(dt.tensor([1, 2], device="cuda"), weight).shape == (2, 4)
