"""What the DDP benchmarks (bench/ddp_*.py) share: the two models and their training steps,
and a launcher that runs N ranks (tcp, mpi, or N independent copies) of a timed loop.

The char-GPT step is bench/step_gpt.py's (examples/char_gpt.GPT at the example's sizes,
cross-entropy, ``zero_grad``, ``backward``, ``clip_grad_norm_(1.0)``, AdamW, ``loss.item()``);
the MLP step is bench/step_mlp.py's nn step (784-1024-1024-10, ReLU, batch 256, SGD).

Run as a script, this file is one rank: ``python bench/ddp_common.py '<spec json>'`` (the
launcher below does that); it writes what it measured as JSON to ``<out>/rank<r>.json``.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness import import_example, set_numpy_threads

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.runtime.config import read_config

HERE = Path(__file__).resolve().parent
MPIEXEC = Path(sys.executable).parent / "mpiexec"
GPT_SIZES = {"vocab": 96, "block": 64, "embed": 96, "layers": 3, "heads": 4}
GPT_BATCH = 32
MLP_SIZES = (784, 1024, 1024, 10)
MLP_BATCH = 256
START_DELAY_S = 4.0  # ranks import and build their models, then start timing together
GUARD_S = 600.0  # a launch still running after this is killed (a bench must not hang)


# ---- models and steps -----------------------------------------------------------------------
def make_model(kind: str, seed: int = 0) -> nn.Module:
    """The char-GPT (``"gpt"``) or the MLP (``"mlp"``), the same weights for a given seed."""
    dt.manual_seed(seed)
    if kind == "gpt":
        return import_example("char_gpt").GPT(**GPT_SIZES, dropout=0.0)
    if kind == "mlp":
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(MLP_SIZES):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        return nn.Sequential(*layers[:-1])
    raise ValueError(f"unknown model {kind!r}; use 'gpt' or 'mlp'")


def make_batch(kind: str, seed: int) -> tuple[dt.Tensor, dt.Tensor]:
    """One random batch for ``kind`` (token windows, or images and labels)."""
    rng = np.random.default_rng(seed)
    if kind == "gpt":
        windows = rng.integers(0, GPT_SIZES["vocab"], (GPT_BATCH, GPT_SIZES["block"] + 1))
        return dt.tensor(windows[:, :-1].copy()), dt.tensor(windows[:, 1:].copy())
    x = rng.standard_normal((MLP_BATCH, MLP_SIZES[0])).astype(np.float32)
    return dt.tensor(x), dt.tensor(rng.integers(0, MLP_SIZES[-1], MLP_BATCH))


class TrainStep:
    """One training step of ``model`` (plain or wrapped in DDP) as the step benchmarks run it."""

    def __init__(self, kind: str, model: nn.Module) -> None:
        self.kind, self.model = kind, model
        params = list(model.parameters())
        if kind == "gpt":
            self.optimizer = dt.optim.AdamW(
                [
                    {"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
                    {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
                ],
                lr=3e-3,
                betas=(0.9, 0.99),
            )
        else:
            self.optimizer = dt.optim.SGD(params, lr=0.01)

    def __call__(self, x: dt.Tensor, y: dt.Tensor) -> float:
        logits = self.model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        self.optimizer.zero_grad()
        loss.backward()
        if self.kind == "gpt":
            dt.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return loss.item()


# ---- one rank -------------------------------------------------------------------------------
def run_rank(spec: dict) -> dict:
    """Build the model (in DDP when ``spec["mode"]`` is tcp or mpi), wait for the common start
    time, run warm-up steps, then time ``spec["steps"]`` steps. Returns the step times and,
    with ``spec["stats"]``, every step's DDP timeline."""
    import dtrain.parallel as dist
    from dtrain.parallel.ddp_stats import DDPStats

    set_numpy_threads(1)  # ranks share 2 cores; OpenBLAS's 2 threads collapse under load
    mode, kind = spec["mode"], spec["model"]
    distributed = mode in ("tcp", "mpi")
    rank = read_config().rank or 0  # torchrun's RANK, or MPICH's / Open MPI's variables
    model = make_model(kind)
    if distributed:
        dist.init_process_group(mode)
        rank = dist.get_rank()
        model = dist.DistributedDataParallel(model, bucket_cap_mb=spec.get("bucket_cap_mb", 25.0))
        if spec.get("stats"):
            model.stats = DDPStats()
    step = TrainStep(kind, model)
    x, y = make_batch(kind, 1000 + rank)
    time.sleep(max(0.0, spec["start_at"] - time.time()))
    for _ in range(spec["warmup"]):
        step(x, y)
    if distributed and model.stats is not None:
        model.stats.clear()
    times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - start)
    result: dict[str, Any] = {"rank": rank, "times": times}
    if distributed:
        if model.stats is not None:
            result["stats"] = model.stats.summary()
            result["buckets"] = [
                [[b.index, b.nbytes, b.duration_s] for b in s.buckets] for s in model.stats.steps
            ]
        dist.destroy_process_group()
    return result


# ---- the launcher ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env(extra: dict[str, Any]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "DTRAIN_BACKEND")
    }
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def launch(mode: str, world: int, kind: str, steps: int, warmup: int, **options: Any) -> list[dict]:
    """Run ``world`` ranks of the timed loop and return each rank's result, by rank.

    ``mode``: ``"tcp"`` (DDP over a tcp group; same-host shared memory unless the option
    ``shm=False``), ``"mpi"`` (DDP under ``mpiexec -n world``), or ``"independent"`` (``world``
    plain single-process loops at once: the contention of sharing the cores, no
    communication). Other options (``stats``, ``bucket_cap_mb``) go to ``run_rank``.
    """
    if mode not in ("tcp", "mpi", "independent"):
        raise ValueError(f"unknown mode {mode!r}; use 'tcp', 'mpi' or 'independent'")
    shm = options.pop("shm", True)
    with tempfile.TemporaryDirectory(prefix="dtrain-ddp-bench-") as tmp:
        spec = {
            "mode": mode,
            "model": kind,
            "steps": steps,
            "warmup": warmup,
            "out": tmp,
            "start_at": time.time() + START_DELAY_S + 0.5 * world,
            **options,
        }
        command = [sys.executable, str(Path(__file__).resolve()), json.dumps(spec)]
        base = {"WORLD_SIZE": world, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": _free_port()}
        base["DTRAIN_SECRET"] = "ddp-bench"
        if not shm:
            base["DTRAIN_SHM"] = "0"
        if mode == "mpi":
            procs = [subprocess.Popen([str(MPIEXEC), "-n", str(world), *command], env=_env({}))]
        else:
            procs = [
                subprocess.Popen(command, env=_env({**base, "RANK": rank})) for rank in range(world)
            ]
        try:
            deadline = time.monotonic() + GUARD_S  # one guard for the whole launch
            for proc in procs:
                proc.wait(max(0.0, deadline - time.monotonic()))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        results = []
        for rank in range(world):
            path = Path(tmp) / f"rank{rank}.json"
            if not path.exists():
                codes = [p.returncode for p in procs]
                raise RuntimeError(f"{mode} x{world}: rank {rank} left no result (exit {codes})")
            results.append(json.loads(path.read_text()))
    return results


def step_time(results: list[dict]) -> float:
    """The mean over ranks of each rank's median step time (seconds)."""
    return statistics.fmean(statistics.median(r["times"]) for r in results)


def load_note() -> str:
    """The machine's load averages: the ranks are this run's own load, so subtract them."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def _main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    result = run_rank(spec)
    out = Path(spec["out"])
    partial = out / f"rank{result['rank']}.json.partial"
    partial.write_text(json.dumps(result))
    partial.replace(out / f"rank{result['rank']}.json")


if __name__ == "__main__":
    _main(sys.argv[1])
