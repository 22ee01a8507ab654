"""``bench/gpu_step.py`` and ``bench/gpu_dispatch.py`` end to end on the CPU: the device
check's benchmarks must not be the first to run their code on the GPU machine, whose time
is short. Under the emulator
(``cuda_emulator``), with a CUDA-graph capture that records the launches it would hold
instead of a graph, and no PyTorch baseline (torch has no CUDA here), each case builds,
times, counts its launches, reports and writes its JSON."""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import pytest
from cuda_emulator import install

from dtrain.runtime import cuda_graph

BENCH = Path(__file__).resolve().parents[2] / "bench"


class _RecordedGraph:
    """What a capture leaves: replays do nothing; the dump lists the launches counted."""

    def __init__(self, counts: collections.Counter) -> None:
        self.counts = counts

    def launch(self, stream: object = None) -> None:
        pass

    def upload(self) -> None:
        pass

    def debug_dot_str(self, flags: int = 0) -> str:
        nodes = [
            f'"graph_1_node_{i}"[shape="rectangle" label="{i}\nvoid {name.replace(" ", "_")}()\n"];'
            for i, name in enumerate(n for n, k in self.counts.items() for _ in range(k))
        ]
        return "\n".join(["digraph dot {", "subgraph cluster_1 {", *nodes, "}", "}"])


@pytest.fixture
def gpu_step(monkeypatch):
    emulator = install(monkeypatch, kernels="uncarried")
    cupy = sys.modules["cupy"]
    monkeypatch.setattr(cupy, "__version__", "emulated", raising=False)
    monkeypatch.setattr(
        cupy.cuda.runtime, "getDeviceProperties", lambda i: {"name": b"emulated"}, raising=False
    )

    def capture_begin(self, pool=None):
        self._counting = emulator.counting()
        self._counts = self._counting.__enter__()

    def capture_end(self):
        self._counting.__exit__(None, None, None)
        host_reads = [name for name in self._counts if name.startswith("host read")]
        assert not host_reads, f"a captured step read the GPU: {host_reads}"
        self._graph = _RecordedGraph(self._counts)

    monkeypatch.setattr(cuda_graph.CUDAGraph, "capture_begin", capture_begin)
    monkeypatch.setattr(cuda_graph.CUDAGraph, "capture_end", capture_end)
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setitem(sys.modules, "torch", None)  # the baseline is the GPU machine's
    sys.modules.pop("gpu_step", None)
    import gpu_step

    yield gpu_step
    sys.modules.pop("gpu_step", None)
    sys.modules.pop("gpu_dispatch", None)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # uncarried launches: arrays hold no values
def test_the_gpu_benchmark_runs_its_cases_end_to_end(gpu_step, tmp_path, capsys):
    out = tmp_path / "gpu_step.json"
    argv = ["--cases", "mlp-small", "gpt", "--steps", "1", "--rounds", "1", "--warmup", "1"]
    assert gpu_step.main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    for case in ("mlp-small", "gpt"):
        assert "error" not in results[case], results[case]
        medians = results[case]["medians_ms"]
        assert {"dtrain eager", "dtrain, bias add", "dtrain graph"} <= set(medians)
        assert results[case]["checks"]["graph_launches"]["total"] > 0
    assert "launches per step (nodes of the captured step): 13;" in printed  # mlp-small


@pytest.mark.slow
def test_the_dispatch_benchmark_runs_end_to_end(gpu_step, tmp_path, capsys):
    import gpu_dispatch  # the emulator, and no torch, as for gpu_step

    out = tmp_path / "dispatch.json"
    argv = ["--calls", "5", "--rounds", "1", "--warmup", "1", "--json", str(out)]
    assert gpu_dispatch.main(argv) == 0
    figures = json.loads(out.read_text())
    assert figures and all(value > 0 for value in _numbers(figures)), figures


def _numbers(tree: object) -> list:
    if isinstance(tree, dict):
        return [n for value in tree.values() for n in _numbers(value)]
    if isinstance(tree, list):
        return [n for value in tree for n in _numbers(value)]
    return [tree] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []
