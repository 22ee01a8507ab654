"""examples/ray_train_digits.py runs as a script (its training function imported by path in
each worker), fails once as asked, resumes from its checkpoint, and learns."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytest.importorskip("ray")
pytest.importorskip("sklearn", reason="the digits examples need scikit-learn (examples extra)")


def test_two_workers_fail_once_resume_and_learn(tmp_path):
    done = subprocess.run(
        [
            sys.executable, str(EXAMPLES / "ray_train_digits.py"), "--epochs", "3",
            "--fail-at", "2", "--max-failures", "1", "--storage-path", str(tmp_path),
            "--name", "digits", "--address", "local",
        ],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RuntimeError: a simulated failure at epoch 2" in done.stderr
    assert "restart 1 of 1" in done.stderr
    found = re.search(r"epoch 3: loss [\d.]+, test accuracy ([\d.]+)", done.stdout)
    assert found, done.stdout[-2000:]
    assert float(found.group(1)) >= 0.85
    kept = sorted(p.name for p in (tmp_path / "digits").glob("checkpoint_*"))
    assert kept == ["checkpoint_000001", "checkpoint_000002"]  # num_to_keep=2 of 3
