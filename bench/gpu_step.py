"""Training steps on one GPU: dtrain (eager and captured as a CUDA graph) against PyTorch eager.

Runs on the GPU machine (``bench/gpu_check.sh`` calls it); needs cupy and, for the baseline,
PyTorch with CUDA. Each case builds the same model in both libraries from the same weights,
checks that the first step gives the same loss, then times ``--steps`` steps per round for
``--rounds`` rounds, the variants taking turns, and prints the median ms/step and the ratio
to PyTorch eager. The GPU is synchronised at the end of each timed block (one ``.item()``
per step is not taken: steps are queued back to back, as a training loop that logs rarely).

Cases:
- ``mlp-small``: MLP 784-1024-1024-10, batch 256, float32, SGD (lr 0.01);
- ``mlp-large``: MLP 784-4096-4096-10, batch 1024, float32, SGD;
- ``gpt``: the char-GPT of examples/char_gpt.py (its default sizes, batch 64), AdamW;
- ``fp16``: ``mlp-large`` under autocast(float16) with a GradScaler against float32, for
  dtrain and for PyTorch: the speed-up of half precision in a training step;
- ``gemm``: one 8192 x 8192 x 8192 matrix product in float32, float32 on TF32 tensor cores
  (``set_float32_matmul_precision("high")``) and float16 (dtrain through its cuBLAS path,
  torch through its own): the matmul-bound speed-ups, in TFLOP/s.

The variant "dtrain, bias add" is the eager step with each Linear layer's bias as its own
launch instead of in the matrix product's cuBLASLt epilogue (``runtime/cublaslt.py``); the
case's header line says whether the epilogue path was on.

For ``mlp-small`` and ``gpt`` it also counts the launches of one step, dtrain's and
PyTorch's: the nodes of the step captured as a CUDA graph, by kernel name
(``dtrain.runtime.cuda_graph.node_counts``). In a host-bound step each launch costs host
time, so the two totals say how much of the gap is launches and how much is per-launch cost.

    python bench/gpu_step.py                    # all cases
    python bench/gpu_step.py --cases mlp-small --steps 50 --rounds 5 --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dtrain as dt
import dtrain.cuda
import dtrain.nn.functional as F
from dtrain import nn
from dtrain.runtime import cublaslt
from dtrain.runtime.cuda_graph import node_counts

try:
    import torch
except ImportError:  # the baseline only
    torch = None
if torch is not None and not torch.cuda.is_available():  # a CPU build, or no driver for it
    print("torch has no CUDA here: dtrain's figures only, no baseline")
    torch = None

MLP_CASES = {"mlp-small": ((784, 1024, 1024, 10), 256), "mlp-large": ((784, 4096, 4096, 10), 1024)}


def mlp(library_nn: Any, sizes: tuple) -> Any:
    """Linear layers with ReLU between them, in dtrain.nn or torch.nn."""
    layers: list = []
    for a, b in itertools.pairwise(sizes):
        layers += [library_nn.Linear(a, b), library_nn.ReLU()]
    return library_nn.Sequential(*layers[:-1])


def dtrain_mlp(sizes: tuple) -> nn.Module:
    return mlp(nn, sizes).to("cuda")


def torch_copy(model: nn.Module, torch_model: Any) -> Any:
    state = {k: torch.from_numpy(v.cpu().numpy().copy()) for k, v in model.state_dict().items()}
    torch_model.load_state_dict(state)
    return torch_model.cuda()


def torch_mlp(sizes: tuple) -> Any:
    return mlp(torch.nn, sizes)


def cuda_sync() -> None:
    dt.cuda.synchronize()
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


class Variant:
    """A named step function and the ms/step of each timed round."""

    def __init__(self, name: str, step: Callable[[], Any]) -> None:
        self.name, self.step, self.times = name, step, []

    def run(self, steps: int) -> None:
        cuda_sync()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        cuda_sync()
        self.times.append((time.perf_counter() - start) / steps * 1e3)


def bias_as_own_launch(step: Callable[[], Any]) -> Variant:
    """The eager step with each Linear bias as its own launch, not in cuBLASLt's epilogue."""

    def unfused() -> Any:
        with cublaslt.bias_as_own_launch():
            return step()

    return Variant("dtrain, bias add", unfused)


def time_round_robin(variants: list[Variant], steps: int, rounds: int, warmup: int) -> None:
    for variant in variants:
        for _ in range(warmup):
            variant.step()
    for _ in range(rounds):
        for variant in variants:
            variant.run(steps)


def graphed(step: Callable[[], Any], zero_grad: Callable[[], None]) -> dt.cuda.CUDAGraph:
    """Capture one call of ``step`` (after two eager warm-up calls) and return the graph."""
    for _ in range(2):
        step()
    zero_grad()
    graph = dt.cuda.CUDAGraph()
    with dt.cuda.graph(graph):
        step()
    return graph


def launches(graph: dt.cuda.CUDAGraph, top: int = 12) -> dict:
    """The nodes of a captured step, by kernel: how many launches the eager step queues
    (the capturable optimizer's step counting aside)."""
    counts = node_counts(graph.debug_dot())
    return {"total": sum(counts.values()), "top": dict(counts.most_common(top))}


def torch_launches(step: Callable[[], None]) -> dict:
    """The same count for a PyTorch step: captured with ``torch.cuda.graph`` after warm-up
    steps on a side stream, as PyTorch's docs do, and dumped with ``debug_dump``. Best
    effort: the error, when the capture or the dump fails."""
    import tempfile

    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        try:  # PyTorch 2.7+ destroys the captured graph unless kept: nothing to dump then
            graph = torch.cuda.CUDAGraph(keep_graph=True)
        except TypeError:
            graph = torch.cuda.CUDAGraph()
        graph.enable_debug_mode()
        with torch.cuda.graph(graph):
            step()
        with tempfile.TemporaryDirectory() as folder:
            path = f"{folder}/graph.dot"
            graph.debug_dump(path)
            with open(path) as file:
                counts = node_counts(file.read())
        return {"total": sum(counts.values()), "top": dict(counts.most_common(12))}
    except Exception as exc:  # a figure to report, not a reason to stop the benchmark
        return {"error": f"{type(exc).__name__}: {exc}"}


def mlp_case(name: str, args: argparse.Namespace) -> tuple[list[Variant], dict]:
    sizes, batch = MLP_CASES[name]
    rng = np.random.default_rng(0)
    x_host = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y_host = rng.integers(0, sizes[-1], batch)
    dt.manual_seed(0)
    models = [dtrain_mlp(sizes) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    x, y = dt.tensor(x_host, device="cuda"), dt.tensor(y_host, device="cuda")

    def make_step(model: nn.Module) -> tuple[Callable, Callable]:
        optimizer = dt.optim.SGD(model.parameters(), lr=0.01)

        def step() -> dt.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            return loss

        return step, lambda: optimizer.zero_grad(set_to_none=True)

    eager_step, _ = make_step(models[0])
    capture_step, zero = make_step(models[1])
    checks = {"dtrain_first_loss": float(F.cross_entropy(models[0](x), y).item())}
    variants = [Variant("dtrain eager", eager_step), bias_as_own_launch(eager_step)]
    graph = graphed(capture_step, zero)
    checks["graph_launches"] = launches(graph)
    variants.append(Variant("dtrain graph", graph.replay))
    if torch is not None:
        tmodel = torch_copy(models[0], torch_mlp(sizes))
        toptim = torch.optim.SGD(tmodel.parameters(), lr=0.01)
        tx, ty = torch.from_numpy(x_host).cuda(), torch.from_numpy(y_host).cuda()
        checks["torch_first_loss"] = float(torch.nn.functional.cross_entropy(tmodel(tx), ty))

        def torch_step() -> Any:
            toptim.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(tmodel(tx), ty)
            loss.backward()
            toptim.step()
            return loss

        variants.append(Variant("torch eager", torch_step))
        graph_model = torch_copy(models[0], torch_mlp(sizes))
        graph_optim = torch.optim.SGD(graph_model.parameters(), lr=0.01)

        def torch_graph_step() -> None:
            graph_optim.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(graph_model(tx), ty).backward()
            graph_optim.step()

        checks["torch_graph_launches"] = torch_launches(torch_graph_step)
    return variants, checks


def gpt_case(args: argparse.Namespace) -> tuple[list[Variant], dict]:
    import step_gpt
    from harness import import_example, to_torch_state

    char_gpt = import_example("char_gpt")
    sizes = (96, 64, 96, 3, 4)
    dt.manual_seed(0)
    model = char_gpt.GPT(*sizes, dropout=0.0).to("cuda")
    rng = np.random.default_rng(1)
    windows = rng.integers(0, sizes[0], size=(64, sizes[1] + 1), dtype=np.int64)
    x_host, y_host = windows[:, :-1].copy(), windows[:, 1:].copy()
    x, y = dt.tensor(x_host, device="cuda"), dt.tensor(y_host, device="cuda")
    step = step_gpt.Step(model, dt, F, dt.nn.utils.clip_grad_norm_)
    checks = {"dtrain_first_loss": float(step.loss(x, y).item())}
    variants = [Variant("dtrain eager", lambda: step(x, y))]
    variants.append(bias_as_own_launch(variants[0].step))
    replay, graph = gpt_graph_step(char_gpt, sizes, model, x, y)
    checks["graph_launches"] = launches(graph)
    variants.append(Variant("dtrain graph", replay))
    if torch is not None:
        cpu_state = {k: v.cpu() for k, v in model.state_dict().items()}
        tmodel = step_gpt.TorchGPT(*sizes)
        tmodel.load_state_dict(to_torch_state(cpu_state))
        tmodel = tmodel.cuda()
        tstep = step_gpt.Step(tmodel, torch, torch.nn.functional, torch.nn.utils.clip_grad_norm_)
        tx, ty = torch.from_numpy(x_host).cuda(), torch.from_numpy(y_host).cuda()
        checks["torch_first_loss"] = float(tstep.loss(tx, ty).item())
        variants.append(Variant("torch eager", lambda: tstep(tx, ty)))
        graph_model = step_gpt.TorchGPT(*sizes)
        graph_model.load_state_dict(to_torch_state(cpu_state))
        graph_model = graph_model.cuda()
        graph_optim = torch.optim.AdamW(
            graph_model.parameters(), lr=step_gpt.LEARNING_RATE, capturable=True
        )

        def torch_graph_step() -> None:
            graph_optim.zero_grad(set_to_none=True)
            logits = graph_model(tx)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, sizes[0]), ty.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(graph_model.parameters(), step_gpt.MAX_GRAD_NORM)
            graph_optim.step()

        checks["torch_graph_launches"] = torch_launches(torch_graph_step)
    return variants, checks


def gpt_graph_step(
    char_gpt: Any, sizes: tuple, like: nn.Module, x: Any, y: Any
) -> tuple[Callable, dt.cuda.CUDAGraph]:
    """The char-GPT step of step_gpt.Step (AdamW, clipping) captured as a CUDA graph, on a
    copy of ``like``: a call that replays it and reads the loss, as the eager step does,
    and the graph."""
    import step_gpt

    model = char_gpt.GPT(*sizes, dropout=0.0).to("cuda")
    model.load_state_dict(like.state_dict())
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = dt.optim.AdamW(
        [
            {"params": decay, "weight_decay": step_gpt.WEIGHT_DECAY},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=step_gpt.LEARNING_RATE,
        betas=step_gpt.BETAS,
        capturable=True,
    )
    losses: list = []

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        dt.nn.utils.clip_grad_norm_(model.parameters(), step_gpt.MAX_GRAD_NORM)
        optimizer.step()
        losses[:] = [loss]

    graph = graphed(step, lambda: optimizer.zero_grad(set_to_none=True))
    static_loss = losses[0]

    def replay_and_read() -> float:
        graph.replay()
        return static_loss.item()

    return replay_and_read, graph


def fp16_case(args: argparse.Namespace) -> tuple[list[Variant], dict]:
    sizes, batch = MLP_CASES["mlp-large"]
    rng = np.random.default_rng(2)
    x_host = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y_host = rng.integers(0, sizes[-1], batch)
    dt.manual_seed(0)
    variants = []
    for half in (False, True):
        model = dtrain_mlp(sizes)
        optimizer = dt.optim.SGD(model.parameters(), lr=0.01)
        scaler = dt.amp.GradScaler("cuda", enabled=half)
        x, y = dt.tensor(x_host, device="cuda"), dt.tensor(y_host, device="cuda")

        def step(model=model, optimizer=optimizer, scaler=scaler, x=x, y=y, half=half) -> None:
            optimizer.zero_grad(set_to_none=True)
            with dt.autocast("cuda", dtype=dt.float16, enabled=half):
                loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        variants.append(Variant(f"dtrain {'fp16' if half else 'fp32'}", step))
    if torch is not None:
        for half in (False, True):
            tmodel = torch_mlp(sizes).cuda()
            toptim = torch.optim.SGD(tmodel.parameters(), lr=0.01)
            tscaler = torch.amp.GradScaler("cuda", enabled=half)
            tx, ty = torch.from_numpy(x_host).cuda(), torch.from_numpy(y_host).cuda()

            def tstep(m=tmodel, o=toptim, s=tscaler, x=tx, y=ty, half=half) -> None:
                o.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.float16, enabled=half):
                    loss = torch.nn.functional.cross_entropy(m(x), y)
                s.scale(loss).backward()
                s.step(o)
                s.update()

            variants.append(Variant(f"torch {'fp16' if half else 'fp32'}", tstep))
    return variants, {}


def profile_host(case: str, variant: Variant, steps: int, path: str | None) -> None:
    """Where the host's time goes in ``variant``: enqueue time per step against the time to
    finish, and the top of a cProfile of ``steps`` steps (appended to ``path``)."""
    import cProfile
    import io
    import pstats

    cuda_sync()
    start = time.perf_counter()
    for _ in range(steps):
        variant.step()
    queued = time.perf_counter() - start
    cuda_sync()
    done = time.perf_counter() - start
    print(
        f"{case} / {variant.name}: host enqueue {queued / steps * 1e3:.3f} ms/step, "
        f"finished {done / steps * 1e3:.3f} ms/step"
    )
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        variant.step()
    cuda_sync()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
    if path:
        with open(path, "a") as file:
            file.write(f"\n===== {case} / {variant.name} =====\n{text.getvalue()}")


def gemm_case(args: argparse.Namespace) -> tuple[list[Variant], dict]:
    size = 8192
    rng = np.random.default_rng(3)
    host = [rng.standard_normal((size, size)).astype(np.float32) for _ in range(2)]
    variants = []
    for dtype in ("float32", "float16"):
        a, b = (dt.tensor(h.astype(dtype), device="cuda") for h in host)
        variants.append(Variant(f"dtrain {dtype}", lambda a=a, b=b: a @ b))
        if dtype == "float32":  # the same float32 product on TF32 tensor cores
            variants.append(Variant("dtrain tf32", lambda a=a, b=b: tf32(dt, a, b)))
        if torch is not None:
            ta, tb = (torch.from_numpy(h.astype(dtype)).cuda() for h in host)
            variants.append(Variant(f"torch {dtype}", lambda a=ta, b=tb: a @ b))
            if dtype == "float32":
                variants.append(Variant("torch tf32", lambda a=ta, b=tb: tf32(torch, a, b)))
    return variants, {"flop_per_step": 2 * size**3}


def tf32(library: Any, a: Any, b: Any) -> Any:
    """``a @ b`` with TF32 allowed (``set_float32_matmul_precision("high")``), then the
    default back, so the other variants taking turns with this one run in full float32."""
    library.set_float32_matmul_precision("high")
    try:
        return a @ b
    finally:
        library.set_float32_matmul_precision("highest")


def report(case: str, variants: list[Variant], checks: dict) -> dict:
    medians = {v.name: statistics.median(v.times) for v in variants}
    base = medians.get("torch eager") or medians.get("torch fp32") or medians.get("torch float32")
    shown = {k: v for k, v in checks.items() if not k.endswith("graph_launches")}
    if case in ("mlp-small", "mlp-large", "gpt"):
        shown["cublaslt"] = cublaslt.status()
    print(f"\n## {case}  {json.dumps(shown)}")
    first = (checks.get("dtrain_first_loss"), checks.get("torch_first_loss"))
    if None not in first and not np.isclose(*first, rtol=1e-4, atol=1e-5):
        print(f"FIRST LOSSES DIFFER: dtrain {first[0]} vs torch {first[1]} (same weights)")
    for lib in ("dtrain", "torch"):
        found = checks.get("graph_launches" if lib == "dtrain" else "torch_graph_launches")
        if found is None:
            continue
        if "error" in found:
            print(f"{lib} launches per step: not counted ({found['error']})")
            continue
        top = ", ".join(f"{name} {n}" for name, n in found["top"].items())
        print(f"{lib} launches per step (nodes of the captured step): {found['total']}; {top}")
    print(f"{'variant':<16} {'ms/step':>9} {'min':>9} {'max':>9} {'vs torch':>9}")
    for v in variants:
        ratio = f"{medians[v.name] / base:.2f}x" if base else "-"
        print(
            f"{v.name:<16} {medians[v.name]:9.3f} {min(v.times):9.3f} {max(v.times):9.3f} "
            f"{ratio:>9}"
        )
    if case == "fp16":
        for lib in ("dtrain", "torch"):
            if f"{lib} fp16" in medians:
                speedup = medians[f"{lib} fp32"] / medians[f"{lib} fp16"]
                print(f"{lib}: fp16 speed-up over fp32 {speedup:.2f}x")
    if case == "gemm":
        for name, ms in medians.items():
            print(f"{name}: {checks['flop_per_step'] / ms / 1e9:.0f} TFLOP/s")
    return {"medians_ms": medians, "checks": checks, "rounds": {v.name: v.times for v in variants}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", nargs="+", default=["mlp-small", "mlp-large", "gpt", "fp16", "gemm"]
    )
    parser.add_argument("--steps", type=int, default=30, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", help="write all figures here")
    parser.add_argument("--profile", help="append a cProfile of each dtrain eager step here")
    args = parser.parse_args(argv)
    if not dt.cuda.is_available():
        print("no CUDA device: this benchmark runs on the GPU machine (bench/gpu_check.sh)")
        return 2
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(0)
    device = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    print(f"device: {device}; cupy {cupy.__version__}; torch {torch and torch.__version__}")
    results: dict = {"device": device}
    try:
        for case in args.cases:
            run_case(case, args, parser, results)
    except KeyboardInterrupt:  # the device check's phase limit: keep what was measured
        print("\ninterrupted: the figures of the cases that finished are kept")
        results["interrupted"] = True
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        return 130
    return 0


def run_case(case: str, args: argparse.Namespace, parser: Any, results: dict) -> None:
    """One case, measured and reported into ``results`` (and ``--json``, rewritten after
    each case, so a run cut short keeps what it measured)."""
    try:
        if case in MLP_CASES:
            variants, checks = mlp_case(case, args)
        elif case == "gpt":
            variants, checks = gpt_case(args)
        elif case == "fp16":
            variants, checks = fp16_case(args)
        elif case == "gemm":
            variants, checks = gemm_case(args)
        else:
            parser.error(f"unknown case {case!r}")
        time_round_robin(variants, args.steps, args.rounds, args.warmup)
        results[case] = report(case, variants, checks)
    except Exception as exc:  # one broken case must not hide the others' figures
        print(f"\n## {case}: FAILED: {type(exc).__name__}: {exc}")
        results[case] = {"error": f"{type(exc).__name__}: {exc}"}
        variants = []
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    for variant in variants:  # after the figures are kept: a failure here loses none
        if variant.name.startswith("dtrain") and "graph" not in variant.name:
            try:
                profile_host(case, variant, args.steps, args.profile)
            except Exception as exc:
                print(f"{case}: profiling {variant.name} failed: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    raise SystemExit(main())
