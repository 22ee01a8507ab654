"""Activation checkpointing under DDP (real processes, tcp): a checkpointed segment with
tuple and dict outputs gives every rank the plain run's averaged gradients, and each
parameter's gradient is accumulated (DDP's ready signal) once per backward."""

from __future__ import annotations

import numpy as np
from launcher import run_tcp


def test_tuple_output_checkpoint_under_ddp_matches_the_plain_run():
    values = list(run_tcp(2, "checkpoint_workers:tuple_outputs").values())
    for value in values:
        assert value["counts_plain"] == value["counts_ckpt"] == [1, 1, 1, 1]
        for ref, plain, ckpt in zip(value["reference"], value["plain"], value["ckpt"]):
            np.testing.assert_allclose(plain, ref, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(ckpt, ref, rtol=1e-12, atol=1e-14)
    for a, b in zip(values[0]["ckpt"], values[1]["ckpt"]):
        np.testing.assert_array_equal(a, b)  # the ranks agree
