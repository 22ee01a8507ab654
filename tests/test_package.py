"""One namespace, every import form, and the public API's names."""

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "dtrain",
        "dtrain.nn",
        "dtrain.nn.functional",
        "dtrain.nn.init",
        "dtrain.nn.utils",
        "dtrain.nn.parameter",
        "dtrain.nn.modules",
        "dtrain.nn.parallel",
        "dtrain.optim.lr_scheduler",
        "dtrain.optim.optimizer",
        "dtrain.utils.data",
        "dtrain.utils.data.distributed",
        "dtrain.backends",
        "dtrain.backends.cudnn",
        "dtrain.cuda.amp",
        "dtrain.autograd",
        "dtrain.linalg",
        "dtrain.special",
        "dtrain.distributed.fsdp",
        "dtrain.distributed.fsdp.wrap",
        "dtrain.distributed.checkpoint",
        "dtrain.distributed.checkpoint.state_dict",
        "dtrain.train",
        "dtrain.train.torch",
        "dtrain.distributions.transforms",
        "dtrain.hub",
        "dtrain.sparse",
        "dtrain.xpu",
        "dtrain.mps",
        "dtrain.testing",
        "dtrain.runtime",
        "dtrain.parallel",
        "dtrain.launch",
        "dtrain._tensor",
        "dtrain._tensor.ops.shape",
    ],
)
def test_import_forms(module):
    importlib.import_module(module)


def test_no_top_level_modules_leak(tmp_path):
    # Run from an empty folder, so only what the install provides can be imported.
    code = (
        "import importlib.util, dtrain; "
        "print([n for n in ('tensor', 'runtime', 'parallel', 'launch') "
        "if importlib.util.find_spec(n)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_aliases_and_from_imports():
    import dtrain as dt
    import dtrain.nn as nn
    import dtrain.nn.functional as F
    from dtrain import Tensor, tensor

    assert isinstance(tensor([1.0]), Tensor)
    assert nn.functional is F and F.relu is dt.relu
    assert dt.tensor is tensor


def test_five_components_exist():
    import dtrain as dt

    x = dt.tensor([1.0])  # Tensor
    w = dt.nn.Parameter(dt.ones(1))  # Parameter
    v = dt.tensor([2.0], requires_grad=True)  # a "Variable": a tensor that carries a gradient
    assert isinstance(x, dt.Tensor) and isinstance(w, dt.Tensor) and v.requires_grad
    assert issubclass(dt.autograd.Function, object)  # Function
    # Module arrives with dtrain.nn's layers (issue 3).


def test_cuda_namespace_comes_with_the_package():
    # dt.cuda as PyTorch users write it, in a fresh process (no earlier `import dtrain.cuda`).
    code = (
        "import dtrain as dt; "
        "print(dt.cuda.is_available() == dt.cuda_is_available(), callable(dt.cuda.CUDAGraph))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_names_ported_scripts_reach_at_import():
    # nanoGPT's dtype table and the other top-level names scripts touch at import, in a
    # fresh process, through `import dtrain as torch`.
    code = (
        "import dtrain as torch; "
        "t = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}; "
        "names = ('Size dtype is_floating_point set_num_threads get_num_threads compile '"
        "'set_printoptions use_deterministic_algorithms FloatTensor LongTensor linalg testing '"
        "'erf tan bernoulli nan_to_num hstack vstack addmm cdist').split(); "
        "missing = [n for n in names if not hasattr(torch, n)]; assert not missing, missing; "
        "assert callable(torch.linalg.norm) and callable(torch.testing.assert_close); "
        "assert callable(torch.autograd.set_detect_anomaly); "
        "print(t['bfloat16'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "bfloat16"
