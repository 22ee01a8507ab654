"""The seed example: autograd reproduces the hand-written numpy fit."""

import subprocess
import sys
from pathlib import Path

import polyfit
import pytest

import dtrain as dt

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("dtype", [dt.float32, dt.float64])
def test_autograd_final_loss_matches_numpy(dtype):
    coefficients_np, loss_np = polyfit.fit_numpy(log=False)
    coefficients_dt, loss_dt = polyfit.fit_autograd(dtype=dtype, log=False)
    assert abs(loss_dt - loss_np) / loss_np < 1e-4
    assert loss_np < 20  # the cubic really fitted sin(x): it starts in the thousands
    assert abs(coefficients_dt - coefficients_np).max() < 1e-3


def test_nn_stage_matches_numpy():
    _, loss_np = polyfit.fit_numpy(log=False)
    _, loss_nn = polyfit.fit_nn(log=False)
    assert abs(loss_nn - loss_np) / loss_np < 1e-4


def test_script_prints_progress_and_the_polynomial():
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "polyfit.py"), "--steps", "200"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "[numpy]    step   100" in result.stdout
    assert "[autograd] step   200" in result.stdout and "[nn]       step   200" in result.stdout
    assert "result: y = " in result.stdout and "relative difference" in result.stdout
