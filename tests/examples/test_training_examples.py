"""The training examples reach their figures, are deterministic, and resume exactly."""

import char_gpt
import cnn_digits
import mlp_digits
import numpy as np
import pytest

import dtrain as dt

pytest.importorskip("sklearn", reason="the digits examples need scikit-learn (examples extra)")


def _params(model):
    return {name: p.detach().numpy().copy() for name, p in model.named_parameters()}


def test_mlp_reaches_95_percent():
    result = mlp_digits.train(mlp_digits.parse(["--quiet"]))
    assert result["accuracy"] >= 0.95


def test_cnn_reaches_95_percent():
    result = cnn_digits.train(cnn_digits.parse(["--quiet"]))
    assert result["accuracy"] >= 0.95


needs_gpu = pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("example", [mlp_digits, cnn_digits])
def test_digits_examples_train_on_the_gpu(example):
    result = example.train(example.parse(["--quiet", "--device", "cuda"]))
    assert next(result["model"].parameters()).is_cuda
    assert result["accuracy"] >= 0.95


def test_same_seed_gives_bitwise_identical_runs():
    args = ["--quiet", "--epochs", "2"]
    first = mlp_digits.train(mlp_digits.parse(args))
    second = mlp_digits.train(mlp_digits.parse(args))
    assert first["loss"] == second["loss"]
    for name, value in _params(first["model"]).items():
        np.testing.assert_array_equal(value, _params(second["model"])[name])


@pytest.mark.parametrize("example", [mlp_digits, cnn_digits])
def test_resume_ends_where_an_uninterrupted_run_ends(example, tmp_path):
    checkpoint = str(tmp_path / "run.safetensors")
    whole = example.train(example.parse(["--quiet", "--epochs", "4"]))
    example.train(
        example.parse(["--quiet", "--epochs", "4", "--stop-after", "2", "--checkpoint", checkpoint])
    )
    resumed = example.train(
        example.parse(["--quiet", "--epochs", "4", "--checkpoint", checkpoint, "--resume"])
    )
    assert resumed["loss"] == whole["loss"]
    for name, value in _params(whole["model"]).items():
        np.testing.assert_array_equal(value, _params(resumed["model"])[name])


TINY_GPT = [
    "--quiet",
    "--embed",
    "32",
    "--layers",
    "1",
    "--heads",
    "2",
    "--block",
    "16",
    "--batch-size",
    "8",
    "--corpus-chars",
    "50000",
    "--eval-every",
    "20",
    "--eval-batches",
    "4",
    "--sample-chars",
    "20",
    "--warmup",
    "5",
]


def test_char_gpt_beats_the_unigram_baseline():
    result = char_gpt.train(char_gpt.parse([*TINY_GPT, "--steps", "120"]))
    assert result["val_loss"] < result["baseline"]


def test_char_gpt_resumes_exactly(tmp_path):
    checkpoint = str(tmp_path / "gpt.safetensors")
    whole = char_gpt.train(char_gpt.parse([*TINY_GPT, "--steps", "40"]))
    char_gpt.train(
        char_gpt.parse(
            [*TINY_GPT, "--steps", "40", "--stop-after", "20", "--checkpoint", checkpoint]
        )
    )
    resumed = char_gpt.train(
        char_gpt.parse([*TINY_GPT, "--steps", "40", "--checkpoint", checkpoint, "--resume"])
    )
    assert resumed["val_loss"] == whole["val_loss"]


@pytest.mark.gpu
@needs_gpu
def test_char_gpt_trains_on_the_gpu():
    result = char_gpt.train(char_gpt.parse([*TINY_GPT, "--steps", "120", "--device", "cuda"]))
    assert result["val_loss"] < result["baseline"]
