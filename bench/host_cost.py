"""dtrain's own host time per training step on the CUDA paths, measured on the CPU.

A small model on a GPU is bound by the host: each launch costs cupy about 20 µs, and what
dtrain does around it (autograd, argument checks, kernel arguments) comes on top. This
script runs ``bench/gpu_step.py``'s steps (small MLP, char-GPT, the MLP under float16
autocast) at tiny sizes through
``tests/runtime/cuda_emulator.py`` with every kernel launch counted but not carried out
(``kernels="uncarried"``), so what is left to time is the Python around the launches plus
numpy on tiny arrays standing in for cupy. A cProfile of the same steps splits that time by
file, and each C built-in is charged to the file that called it, so the "dtrain" share is
dtrain's own code and the calls it makes.

It also counts, per step, the cupy calls that cost host time without launching anything:
allocations (``cupy.empty``), views (reshape, basic indexing, transpose), device switches
(``with device:``) and Device objects (``array.device``); each is a few µs on a GPU's host,
a cost the emulator's numpy does not show. Those counts, and the calls dtrain's code makes,
do not vary from run to run; the times do.

The baseline is PyTorch eager on the CPU at the same sizes, in the same run: its step is
also nearly all host work there (its dispatcher and autograd; a CUDA launch adds a few µs
per kernel that it does not pay here).

    python bench/host_cost.py                  # every step, 400 timed steps each
    python bench/host_cost.py --case gpt --top 30
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import itertools
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests" / "runtime")]

import pytest  # noqa: E402 - the emulator installs itself with pytest's MonkeyPatch
import step_gpt  # noqa: E402
from cuda_emulator import Emulator, install  # noqa: E402
from harness import import_example, to_torch_state  # noqa: E402

import dtrain as dt  # noqa: E402
import dtrain.nn.functional as F  # noqa: E402
from dtrain import nn  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

# gpu_step's steps at tiny sizes: the same layers, so the same launches (its mlp-small is
# 784-1024-1024-10; its gpt is vocab 96, context 64, embed 96, 3 blocks of 4 heads).
MLP_SIZES = (16, 32, 32, 4)
MLP_BATCH = 4
GPT_SIZES = (16, 8, 16, 3, 4)  # vocab, context, embed, blocks, heads
GPT_BATCH = 2


def mlp(library_nn: Any) -> Any:
    layers: list = []
    for a, b in itertools.pairwise(MLP_SIZES):
        layers += [library_nn.Linear(a, b), library_nn.ReLU()]
    return library_nn.Sequential(*layers[:-1])


def mlp_steps() -> tuple[Callable[[], Any], Callable[[], Any] | None]:
    """The MLP with ReLU and SGD, as gpu_step's mlp-small: dtrain on "cuda", torch on the CPU."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((MLP_BATCH, MLP_SIZES[0])).astype(np.float32)
    y = rng.integers(0, MLP_SIZES[-1], MLP_BATCH)
    model = mlp(nn).to("cuda")
    optimizer = dt.optim.SGD(model.parameters(), lr=0.01)
    dx, dy = dt.tensor(x, device="cuda"), dt.tensor(y, device="cuda")

    def dtrain_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(dx), dy).backward()
        optimizer.step()

    if torch is None:
        return dtrain_step, None
    torch_model = mlp(torch.nn)
    torch_optimizer = torch.optim.SGD(torch_model.parameters(), lr=0.01)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step() -> None:
        torch_optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(torch_model(tx), ty).backward()
        torch_optimizer.step()

    return dtrain_step, torch_step


def gpt_steps() -> tuple[Callable[[], Any], Callable[[], Any] | None]:
    """The char-GPT step of bench/step_gpt.py (AdamW, clipping, ``loss.item()``)."""
    char_gpt = import_example("char_gpt")
    dt.manual_seed(0)
    model = char_gpt.GPT(*GPT_SIZES, dropout=0.0)
    windows = np.random.default_rng(1).integers(0, GPT_SIZES[0], size=(GPT_BATCH, GPT_SIZES[1] + 1))
    x, y = windows[:, :-1].copy(), windows[:, 1:].copy()
    torch_step = None
    if torch is not None:
        torch_model = step_gpt.TorchGPT(*GPT_SIZES)
        torch_model.load_state_dict(to_torch_state(model.state_dict()))
        clip = torch.nn.utils.clip_grad_norm_
        torch_gpt = step_gpt.Step(torch_model, torch, torch.nn.functional, clip)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        torch_step = lambda: torch_gpt(tx, ty)
    model.to("cuda")
    dtrain_gpt = step_gpt.Step(model, dt, F, dt.nn.utils.clip_grad_norm_)
    dx, dy = dt.tensor(x, device="cuda"), dt.tensor(y, device="cuda")
    return (lambda: dtrain_gpt(dx, dy)), torch_step


def fp16_steps() -> tuple[Callable[[], Any], Callable[[], Any] | None]:
    """gpu_step's fp16 case: the MLP under float16 autocast with a GradScaler and SGD. torch
    runs it in bfloat16 on the CPU (its CPU autocast's type), so its figure is a rough scale."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((MLP_BATCH, MLP_SIZES[0])).astype(np.float32)
    y = rng.integers(0, MLP_SIZES[-1], MLP_BATCH)
    model = mlp(nn).to("cuda")
    optimizer = dt.optim.SGD(model.parameters(), lr=0.01)
    scaler = dt.amp.GradScaler("cuda")
    dx, dy = dt.tensor(x, device="cuda"), dt.tensor(y, device="cuda")

    def dtrain_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with dt.autocast("cuda", dtype=dt.float16):
            loss = F.cross_entropy(model(dx), dy)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    if torch is None:
        return dtrain_step, None
    torch_model = mlp(torch.nn)
    torch_optimizer = torch.optim.SGD(torch_model.parameters(), lr=0.01)
    torch_scaler = torch.amp.GradScaler("cpu")
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step() -> None:
        torch_optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(torch_model(tx), ty)
        torch_scaler.scale(loss).backward()
        torch_scaler.step(torch_optimizer)
        torch_scaler.update()

    return dtrain_step, torch_step


CASES = {"mlp-small": mlp_steps, "gpt": gpt_steps, "fp16": fp16_steps}


def round_ms(step: Callable[[], Any], steps: int, rounds: int) -> tuple[float, float]:
    """The mean ms per call of each of ``rounds`` rounds of ``steps // rounds`` calls: their
    median, and the fastest round (the least disturbed by the rest of a shared machine)."""
    per_round = max(1, steps // rounds)
    means = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(per_round):
            step()
        means.append((time.perf_counter() - start) / per_round * 1e3)
    return statistics.median(means), min(means)


def area(filename: str) -> str:
    """Which part of the run a function's file belongs to."""
    path = Path(filename)
    if not path.is_absolute():
        return "python"  # built-ins ("~") and frozen modules
    try:
        relative = path.resolve().relative_to(ROOT)
    except ValueError:
        return "numpy" if "numpy" in path.parts else "python"
    top = relative.parts[0]
    if top == "tests":
        return "emulator"
    if top in ("bench", "examples"):
        return "script"
    return "dtrain" if top in ("runtime", "tensor", "parallel", "launch") else "python"


def split_by_area(stats: pstats.Stats) -> tuple[collections.Counter, collections.Counter, int]:
    """Seconds of own time by area, and by dtrain function; a built-in's time goes to the
    area of its callers, in proportion to the time each caller spent in it. Also the calls
    dtrain's code made (to its own functions and to built-ins): a count that, unlike the
    times, does not change from run to run."""
    areas: collections.Counter = collections.Counter()
    functions: collections.Counter = collections.Counter()
    calls = 0
    for (filename, line, name), (_, count, own, _, callers) in stats.stats.items():
        if filename != "~":
            where = area(filename)
            areas[where] += own
            if where == "dtrain":
                functions[f"{Path(filename).resolve().relative_to(ROOT)}:{line} {name}"] += own
                calls += count
            continue
        paid = sum(entry[2] for entry in callers.values()) or 1.0
        for (caller_file, caller_line, caller_name), entry in callers.items():
            share = own * entry[2] / paid
            where = area(caller_file)
            areas[where] += share
            if where == "dtrain":
                where_from = Path(caller_file).resolve().relative_to(ROOT)
                caller = f"{where_from}:{caller_line} {caller_name}"
                functions[caller] += share
                calls += entry[1]
    return areas, functions, calls


def run_case(name: str, emulator: Emulator, args: argparse.Namespace) -> dict:
    dtrain_step, torch_step = CASES[name]()
    for _ in range(args.warmup):
        dtrain_step()
    with emulator.counting() as counts:
        dtrain_step()
    launches = Emulator.total(counts)
    host_calls = dict(emulator.host_calls)
    dtrain_ms, dtrain_best = round_ms(dtrain_step, args.steps, args.rounds)
    torch_ms = torch_best = None
    if torch_step is not None:
        for _ in range(args.warmup):
            torch_step()
        torch_ms, torch_best = round_ms(torch_step, args.steps, args.rounds)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.profile_steps):
        dtrain_step()
    profiler.disable()
    areas, functions, calls = split_by_area(pstats.Stats(profiler))
    profiled = sum(areas.values())
    dtrain_share = areas["dtrain"] / profiled
    print(f"\n## {name}: {launches} launches per step")
    print(
        f"dtrain step, CUDA path, launches not carried out: {dtrain_ms:.3f} ms "
        f"(fastest round {dtrain_best:.3f})"
    )
    if torch_ms is not None:
        print(
            f"torch {torch.__version__} eager step on the CPU, same sizes: {torch_ms:.3f} ms "
            f"(fastest round {torch_best:.3f})"
        )
        print(
            f"ratio dtrain / torch: {dtrain_ms / torch_ms:.2f}x "
            f"(fastest rounds: {dtrain_best / torch_best:.2f}x)"
        )
    print("own time under cProfile, by area (built-ins charged to their callers):")
    for where, seconds in areas.most_common():
        print(f"  {where:9s} {seconds / profiled:6.1%}")
    estimate = dtrain_best * dtrain_share
    print(
        f"dtrain's own code: ~{estimate:.3f} ms per step (its share of the fastest round), "
        f"~{estimate / launches * 1e3:.1f} us per launch"
    )
    print(f"calls made by dtrain's code: {calls / args.profile_steps:.0f} per step")
    listed = ", ".join(f"{n} {name}" for name, n in sorted(host_calls.items()))
    print(f"cupy host calls without a launch, per step: {sum(host_calls.values())} ({listed})")
    print(f"top {args.top} dtrain functions by own time (share of the profiled step):")
    for function, seconds in functions.most_common(args.top):
        print(f"  {seconds / profiled:6.2%}  {function}")
    return {
        "launches": launches,
        "dtrain_ms": dtrain_ms,
        "torch_ms": torch_ms,
        "calls": calls,
        "host_calls": host_calls,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--steps", type=int, default=400, help="timed steps per library")
    parser.add_argument("--rounds", type=int, default=10, help="blocks the timed steps are cut in")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--profile-steps", type=int, default=50)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    torch_line = f"torch {torch.__version__}" if torch is not None else "torch not installed"
    print(f"dtrain {dt.__version__}, numpy {np.__version__}, {torch_line}")
    print(f"each time: the median of {args.rounds} rounds of {args.steps // args.rounds} steps")
    patcher = pytest.MonkeyPatch()
    emulator = install(patcher, kernels="uncarried")
    try:
        with np.errstate(all="ignore"):  # uncarried launches leave garbage in their outputs
            for name in CASES if args.case == "all" else [args.case]:
                run_case(name, emulator, args)
    finally:
        patcher.undo()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
