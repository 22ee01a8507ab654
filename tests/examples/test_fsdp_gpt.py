"""examples/fsdp_gpt.py: FSDP training on real ranks, a distributed checkpoint, and a resume
on another number of ranks that continues as the uninterrupted run."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fsdp_gpt.py"
TINY = [
    "--embed", "32", "--layers", "2", "--heads", "2", "--block", "16", "--batch-size", "6",
    "--corpus-chars", "50000", "--eval-batches", "2", "--steps", "12", "--warmup", "3",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_ranks(world: int, args: list[str], metrics: Path) -> dict:
    """The example as ``world`` ranks (torchrun's variables); rank 0's metrics."""
    port, secret = _free_port(), secrets.token_hex(8)
    ranks = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), DTRAIN_SECRET=secret)
        env.update(LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1", DTRAIN_TIMEOUT="120")
        command = [sys.executable, str(EXAMPLE), *TINY, *args, "--metrics", str(metrics)]
        ranks.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    outputs = []
    try:
        for process in ranks:
            outputs.append(process.communicate(timeout=300)[0].decode(errors="replace"))
    finally:
        for process in ranks:
            process.kill()
    for rank, (process, output) in enumerate(zip(ranks, outputs)):
        assert process.returncode == 0, f"rank {rank} exited {process.returncode}:\n{output}"
    return json.loads(metrics.read_text())


def test_a_checkpoint_from_two_ranks_resumes_on_three_as_the_uninterrupted_run(tmp_path):
    whole = run_ranks(2, [], tmp_path / "whole.json")
    checkpoint = tmp_path / "ckpt"
    run_ranks(2, ["--checkpoint-dir", str(checkpoint), "--stop-after", "6"], tmp_path / "a.json")
    assert (checkpoint / ".metadata").is_file()
    resumed = run_ranks(
        3, ["--checkpoint-dir", str(checkpoint), "--resume"], tmp_path / "resumed.json"
    )
    assert sorted(resumed["losses"], key=int) == [str(s) for s in range(6, 12)]
    for step, loss in resumed["losses"].items():
        assert abs(loss - whole["losses"][step]) < 1e-4, (step, loss, whole["losses"][step])
    assert abs(resumed["val_loss"] - whole["val_loss"]) < 1e-4
    assert whole["losses"]["11"] < whole["losses"]["0"]  # it trains
