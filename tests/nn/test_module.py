"""``nn.Module`` semantics, checked against PyTorch's documented behaviour: registration,
iteration order and names, state dicts, modes, dtype moves, gradients, hooks and repr."""

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn


class Block(nn.Module):
    """A sub-module with a parameter of its own, a child and two kinds of buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(dt.ones(3))
        self.fc = nn.Linear(3, 3)
        self.register_buffer("steps", dt.zeros((), dtype=dt.int64))
        self.register_buffer("cache", dt.zeros(3), persistent=False)

    def forward(self, x: dt.Tensor) -> dt.Tensor:
        return self.fc(x) * self.scale


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(2, 3)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.norm = nn.LayerNorm(3)
        self.head = nn.Linear(3, 1, bias=False)

    def forward(self, x: dt.Tensor) -> dt.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


# ---- registration --------------------------------------------------------------------------
def test_assigning_parameters_modules_and_tensors_registers_each_kind():
    m = nn.Module()
    m.w = nn.Parameter(dt.ones(2))
    m.sub = nn.Linear(2, 2)
    m.plain = dt.ones(2)  # a plain tensor is just an attribute, not state
    m.register_buffer("buf", dt.zeros(2))
    assert list(m._parameters) == ["w"]
    assert list(m._modules) == ["sub"]
    assert list(m._buffers) == ["buf"]
    assert [name for name, _ in m.named_parameters()] == ["w", "sub.weight", "sub.bias"]
    assert "plain" not in m.state_dict()
    assert m.w is m._parameters["w"] and m.sub is m._modules["sub"] and m.buf is m._buffers["buf"]


def test_reassigning_a_parameter_slot():
    m = nn.Linear(2, 2)
    new = nn.Parameter(dt.zeros(2, 2))
    m.weight = new
    assert m.weight is new and list(m.state_dict()) == ["weight", "bias"]
    m.bias = None  # keeps the slot, like bias=False
    assert m.bias is None and "bias" in m._parameters
    assert list(m.state_dict()) == ["weight"]
    with pytest.raises(TypeError, match=r"parameter 'weight'.*nn.Parameter"):
        m.weight = dt.ones(2, 2)


def test_reassigning_moves_a_name_between_registries():
    m = nn.Module()
    m.x = dt.ones(1)  # plain attribute
    m.x = nn.Parameter(dt.ones(1))
    assert "x" not in m.__dict__ and "x" in m._parameters
    with pytest.raises(TypeError, match=r"Linear to parameter 'x'.*del the parameter"):
        m.x = nn.Linear(1, 1)  # as PyTorch: a module does not silently replace a parameter
    del m.x
    m.x = nn.Linear(1, 1)
    assert "x" not in m._parameters and m.x is m._modules["x"]
    m.x = nn.Parameter(dt.ones(1))
    assert "x" not in m._modules and [n for n, _ in m.named_parameters()] == ["x"]


def test_reassigning_buffers():
    m = nn.Module()
    m.register_buffer("buf", dt.zeros(2))
    m.buf = dt.ones(3)  # a tensor replaces the buffer
    assert m.state_dict()["buf"].shape == (3,)
    m.buf = None
    assert "buf" not in m.state_dict() and "buf" in m._buffers
    with pytest.raises(TypeError, match="buffer 'buf'"):
        m.buf = 3.0


def test_reassigning_a_submodule_slot_to_something_else_fails():
    m = nn.Sequential(nn.Linear(1, 1))
    with pytest.raises(TypeError, match="sub-module '0'"):
        setattr(m, "0", 3)
    setattr(m, "0", None)
    assert list(m.named_parameters()) == []


def test_deleting_parameters_buffers_and_modules():
    m = Block()
    del m.scale
    del m.steps
    del m.fc
    assert list(m.state_dict()) == []
    assert list(m.named_parameters()) == []
    for name in ("scale", "steps", "fc"):
        assert not hasattr(m, name)
    with pytest.raises(AttributeError, match="'Block' object has no attribute 'nothing'"):
        m.nothing  # noqa: B018
    m.other = 1
    del m.other
    assert not hasattr(m, "other")


def test_assigning_state_before_super_init_names_the_fix():
    class Early(nn.Module):
        def __init__(self, value):
            self.size = 3  # plain attributes are fine, as in PyTorch
            self.w = value
            super().__init__()

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Early(nn.Parameter(dt.ones(1)))
    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Early(nn.Linear(1, 1))
    assert Early(5).w == 5


def test_register_rejects_bad_names_and_clashes():
    m = nn.Linear(2, 2)
    with pytest.raises(KeyError, match=r"'a.b'"):
        m.register_buffer("a.b", dt.ones(1))
    with pytest.raises(KeyError, match="''"):
        m.register_parameter("", nn.Parameter(dt.ones(1)))
    with pytest.raises(KeyError, match="'weight'"):
        m.register_buffer("weight", dt.ones(1))  # already a parameter
    m.note = "hi"
    with pytest.raises(KeyError, match="'note'"):
        m.register_buffer("note", dt.ones(1))
    with pytest.raises(TypeError, match=r"nn.Parameter"):
        m.register_parameter("raw", dt.ones(1))
    with pytest.raises(TypeError, match="buffer 'raw' must be a Tensor"):
        m.register_buffer("raw", [1.0])
    with pytest.raises(TypeError, match="is not a Module"):
        m.add_module("raw", 3)


# ---- iteration -----------------------------------------------------------------------------
NET_PARAMETERS = [
    ("embed.weight", (3, 2)),
    ("embed.bias", (3,)),
    ("blocks.0.scale", (3,)),
    ("blocks.0.fc.weight", (3, 3)),
    ("blocks.0.fc.bias", (3,)),
    ("blocks.1.scale", (3,)),
    ("blocks.1.fc.weight", (3, 3)),
    ("blocks.1.fc.bias", (3,)),
    ("norm.weight", (3,)),
    ("norm.bias", (3,)),
    ("head.weight", (1, 3)),
]


def test_nested_named_parameters_order_and_names():
    net = Net()
    assert [(n, p.shape) for n, p in net.named_parameters()] == NET_PARAMETERS
    assert [p.shape for p in net.parameters()] == [s for _, s in NET_PARAMETERS]
    assert _same(net.parameters(), (p for _, p in net.named_parameters()))
    assert _same(net.modules(), (m for _, m in net.named_modules()))
    assert _same(net.blocks[0].parameters(recurse=False), [net.blocks[0].scale])
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert next(n for n, _ in net.named_parameters(prefix="net")) == "net.embed.weight"
    assert [n for n, _ in net.named_parameters(recurse=False)] == []
    assert [n for n, _ in net.blocks[0].named_parameters(recurse=False)] == ["scale"]


def test_named_modules_children_and_buffers():
    net = Net()
    assert [n for n, _ in net.named_modules()] == [
        "",
        "embed",
        "blocks",
        "blocks.0",
        "blocks.0.fc",
        "blocks.1",
        "blocks.1.fc",
        "norm",
        "head",
    ]
    assert [n for n, _ in net.named_children()] == ["embed", "blocks", "norm", "head"]
    assert [type(m).__name__ for m in net.children()] == [
        "Linear",
        "ModuleList",
        "LayerNorm",
        "Linear",
    ]
    assert next(net.modules()) is net
    assert [n for n, _ in net.named_buffers()] == [
        "blocks.0.steps",
        "blocks.0.cache",
        "blocks.1.steps",
        "blocks.1.cache",
    ]
    assert len(list(net.buffers())) == 4
    assert net.get_submodule("blocks.1.fc") is net.blocks[1].fc
    assert net.get_submodule("") is net
    with pytest.raises(AttributeError, match="'missing'"):
        net.get_submodule("blocks.missing")


def _same(these, those):
    """The same objects (not merely equal ones), in the same order."""
    these, those = list(these), list(those)
    return len(these) == len(those) and all(a is b for a, b in zip(these, those))


def test_tied_parameter_is_counted_once():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3))
    model[2].weight = model[0].weight
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.bias"]
    assert len(list(model.parameters())) == 3
    assert _same(model.parameters(), (p for _, p in model.named_parameters()))
    assert len(list(model.named_parameters(remove_duplicate=False))) == 4
    # state_dict names every path, as PyTorch does, so tied checkpoints load either way.
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_shared_module_is_visited_once_but_saved_under_both_names():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    assert [n for n, _ in model.named_modules()] == ["", "0", "1"]
    assert [n for n, _ in model.named_modules(remove_duplicate=False)] == ["", "0", "1", "2"]
    # parameters() and modules() walk the tree without names, in the named walks' order
    assert _same(model.modules(), (m for _, m in model.named_modules()))
    assert _same(model.parameters(), (p for _, p in model.named_parameters()))
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    model.load_state_dict(model.state_dict())  # both names load into the one module
    out = model(dt.ones(1, 2))
    out.sum().backward()
    assert shared.weight.grad is not None


def test_shared_modules_match_torch_names(torch):
    shared = nn.Linear(2, 2)
    ours = nn.Sequential(shared, nn.ReLU(), shared)
    tshared = torch.nn.Linear(2, 2)
    theirs = torch.nn.Sequential(tshared, torch.nn.ReLU(), tshared)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]


def test_net_names_match_torch(torch):
    class TBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(3))
            self.fc = torch.nn.Linear(3, 3)
            self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
            self.register_buffer("cache", torch.zeros(3), persistent=False)

    class TNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Linear(2, 3)
            self.blocks = torch.nn.ModuleList([TBlock(), TBlock()])
            self.norm = torch.nn.LayerNorm(3)
            self.head = torch.nn.Linear(3, 1, bias=False)

    ours, theirs = Net(), TNet()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert list(ours.state_dict()) == list(theirs.state_dict())


# ---- state dicts ---------------------------------------------------------------------------
def test_state_dict_order_and_non_persistent_buffers():
    block = Block()
    # This module's parameters, then its persistent buffers, then each child's.
    assert list(block.state_dict()) == ["scale", "steps", "fc.weight", "fc.bias"]
    assert "cache" in dict(block.named_buffers())  # still a buffer, just not saved
    net = Net()
    assert "blocks.0.cache" not in net.state_dict()
    assert "blocks.0.steps" in net.state_dict()


def test_state_dict_values_are_detached_views_unless_keep_vars():
    m = nn.Linear(2, 2)
    state = m.state_dict()
    assert not state["weight"].requires_grad and state["weight"] is not m.weight
    state["bias"].fill_(7.0)  # same memory, as in PyTorch
    np.testing.assert_array_equal(m.bias.detach().numpy(), [7.0, 7.0])
    assert m.state_dict(keep_vars=True)["weight"] is m.weight


def test_load_state_dict_copies_in_place_and_keeps_identity():
    src, dst = Net(), Net()
    params_before = list(dst.parameters())
    result = dst.load_state_dict(src.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert all(a is b for a, b in zip(dst.parameters(), params_before))
    for (name, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy(), err_msg=name)
    with dt.no_grad():
        src.blocks[0].scale.fill_(5.0)  # loading copied: later changes to src do not leak
    assert dst.blocks[0].scale.detach().numpy().tolist() == [1.0, 1.0, 1.0]
    with dt.no_grad():
        src.blocks[0].scale.fill_(1.0)
    x = dt.randn(4, 2)
    np.testing.assert_allclose(dst(x).detach().numpy(), src(x).detach().numpy())


def test_load_state_dict_accepts_numpy_arrays_and_casts():
    m = nn.Linear(2, 1)
    m.load_state_dict({"weight": np.array([[1.0, 2.0]]), "bias": np.array([0.5])})
    assert m.weight.dtype == dt.float32
    np.testing.assert_allclose(m(dt.tensor([[1.0, 1.0]])).detach().numpy(), [[3.5]])


def test_strict_load_names_missing_and_unexpected_keys():
    m = nn.Linear(2, 2)
    state = m.state_dict()
    with pytest.raises(RuntimeError, match=r"missing keys \['bias'\]"):
        m.load_state_dict({"weight": state["weight"]})
    with pytest.raises(RuntimeError, match=r"unexpected keys \['extra'\]"):
        m.load_state_dict({**state, "extra": dt.ones(1)})
    m.bias.data = dt.zeros(2)
    result = m.load_state_dict({"bias": dt.ones(2), "extra": dt.ones(1)}, strict=False)
    assert result.missing_keys == ["weight"] and result.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(m.bias.detach().numpy(), [1.0, 1.0])  # the rest was loaded


def test_size_mismatch_names_the_key_and_both_shapes():
    m = nn.Sequential(nn.Linear(2, 3))
    state = {"0.weight": dt.ones(4, 2), "0.bias": dt.ones(3)}
    for strict in (True, False):
        with pytest.raises(RuntimeError, match=r"'0.weight'.*\(4, 2\).*\(3, 2\)"):
            m.load_state_dict(state, strict=strict)


def test_empty_parameter_errors_until_loaded():
    class Lazy(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter()

        def forward(self, x):
            return x @ self.weight

    m = Lazy()
    with pytest.raises(RuntimeError, match="'weight' of Lazy is uninitialised"):
        m(dt.ones(1, 2))
    w = m.weight
    m.load_state_dict({"weight": dt.tensor([[1.0], [2.0]])})
    assert m.weight is w and m.weight.shape == (2, 1) and m.weight.requires_grad
    np.testing.assert_allclose(m(dt.ones(1, 2)).detach().numpy(), [[3.0]])


def test_empty_parameter_replaced_on_a_layer():
    layer = nn.Linear(3, 2)
    layer.weight = nn.Parameter()
    with pytest.raises(RuntimeError, match=r"'weight' of Linear.*load a state dict"):
        layer(dt.ones(1, 3))
    layer.weight = nn.Parameter(dt.ones(2, 3))  # assigning a real one also fixes it
    layer.bias.data = dt.zeros(2)
    np.testing.assert_allclose(layer(dt.ones(1, 3)).detach().numpy(), [[3.0, 3.0]])


# ---- modes, dtypes, gradients --------------------------------------------------------------
def test_train_and_eval_reach_every_submodule():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.blocks.train()
    assert net.blocks[1].fc.training and not net.training
    net.train()
    assert all(m.training for m in net.modules())
    with pytest.raises(ValueError, match="bool"):
        net.train("no")


def test_train_calls_overridden_train_of_children():
    class Frozen(nn.Linear):
        def train(self, mode=True):
            return super().train(False)  # e.g. a frozen batch norm

    model = nn.Sequential(Frozen(1, 1), nn.Dropout())
    model.train()
    assert model[1].training and not model[0].training


def test_to_dtype_casts_in_place():
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    params = list(m.parameters())
    m(dt.randn(4, 2)).sum().backward()
    assert m.to(dt.float64) is m
    assert all(a is b for a, b in zip(m.parameters(), params))
    assert all(p.dtype == dt.float64 and p.grad.dtype == dt.float64 for p in m.parameters())
    assert m[1].running_mean.dtype == dt.float64
    assert m[1].num_batches_tracked.dtype == dt.int64  # integers are left alone
    assert m(dt.randn(4, 2, dtype=dt.float64)).dtype == dt.float64
    assert m.float()[0].weight.dtype == dt.float32
    assert m.to(dtype=dt.float16)[0].bias.dtype == dt.float16
    assert m.double()[0].weight.dtype == dt.float64
    assert m.to("cpu", dt.float32)[0].weight.dtype == dt.float32
    with pytest.raises(TypeError, match="int64"):
        m.to(dt.int64)
    with pytest.raises(TypeError, match="unexpected"):
        m.to(copy=True)


def test_zero_grad_and_requires_grad():
    m = nn.Linear(3, 2)
    m(dt.ones(1, 3)).sum().backward()
    m.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.detach().numpy().any() for p in m.parameters())
    m(dt.ones(1, 3)).sum().backward()
    m.zero_grad()  # PyTorch 2's default: set_to_none=True
    assert all(p.grad is None for p in m.parameters())
    assert m.requires_grad_(False) is m
    assert not any(p.requires_grad for p in m.parameters())


def test_apply_visits_children_first_then_self():
    net = Net()
    visited = []
    assert net.apply(lambda m: visited.append(type(m).__name__)) is net
    assert visited == [
        "Linear",
        "Linear",
        "Block",
        "Linear",
        "Block",
        "ModuleList",
        "LayerNorm",
        "Linear",
        "Net",
    ]

    def init(m):
        if isinstance(m, nn.Linear):
            nn.init.constant_(m.weight, 0.5)

    net.apply(init)
    assert np.all(net.head.weight.detach().numpy() == 0.5) and net.head.weight.grad_fn is None


# ---- hooks ---------------------------------------------------------------------------------
def test_forward_pre_hook_can_replace_the_input():
    m = nn.Identity()
    seen = []
    handle = m.register_forward_pre_hook(lambda mod, args: seen.append(args) or args[0] * 2)
    out = m(dt.tensor([1.0]))
    assert out.tolist() == [2.0] and isinstance(seen[0], tuple)
    handle.remove()
    assert m(dt.tensor([1.0])).tolist() == [1.0]


def test_forward_hook_sees_input_and_output_and_can_replace_it():
    m = nn.Linear(1, 1)
    calls = []

    def record(mod, args, output):
        calls.append((mod, args[0].tolist(), output.shape))

    h1 = m.register_forward_hook(record)
    h2 = m.register_forward_hook(lambda mod, args, output: output * 0)
    out = m(dt.tensor([[3.0]]))
    assert calls == [(m, [[3.0]], (1, 1))] and out.tolist() == [[0.0]]
    h2.remove()
    h2.remove()  # a second remove is harmless
    assert m(dt.tensor([[3.0]])).tolist() != [[0.0]] and len(calls) == 2
    h1.remove()
    m(dt.tensor([[3.0]]))
    assert len(calls) == 2


def test_hooks_run_in_registration_order_and_stale_handles_stay_stale():
    m = nn.Identity()
    order = []
    old = m.register_forward_hook(lambda *a: order.append("a"))
    m.register_forward_hook(lambda *a: order.append("b"))
    old.remove()
    m.register_forward_hook(lambda *a: order.append("c"))
    old.remove()  # must not remove "c"
    m(dt.ones(1))
    assert order == ["b", "c"]


# ---- repr ----------------------------------------------------------------------------------
class Encoder(nn.Module):
    def __init__(self, dropout_p=0.1):
        super().__init__()
        self.embed = nn.Embedding(10, 8, padding_idx=0)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.layers = nn.ModuleList([nn.Linear(8, 8) for _ in range(3)] + [nn.GELU()])
        self.heads = nn.ModuleDict({"cls": nn.Linear(8, 4), "reg": nn.Linear(8, 1, bias=False)})
        self.mlp = nn.Sequential(
            nn.LayerNorm(8),
            nn.Linear(8, 16),
            nn.ReLU(),
            nn.Dropout(dropout_p),
            nn.BatchNorm1d(16, momentum=None),
            nn.Sequential(nn.Softmax(dim=1), nn.Identity()),
        )
        self.loss = nn.CrossEntropyLoss(label_smoothing=0.1)


ENCODER_REPR = """\
Encoder(
  (embed): Embedding(10, 8, padding_idx=0)
  (attn): MultiheadAttention(
    (out_proj): NonDynamicallyQuantizableLinear(in_features=8, out_features=8, bias=True)
  )
  (layers): ModuleList(
    (0-2): 3 x Linear(in_features=8, out_features=8, bias=True)
    (3): GELU(approximate='none')
  )
  (heads): ModuleDict(
    (cls): Linear(in_features=8, out_features=4, bias=True)
    (reg): Linear(in_features=8, out_features=1, bias=False)
  )
  (mlp): Sequential(
    (0): LayerNorm((8,), eps=1e-05, elementwise_affine=True, bias=True)
    (1): Linear(in_features=8, out_features=16, bias=True)
    (2): ReLU()
    (3): Dropout(p=0.1, inplace=False)
    (4): BatchNorm1d(16, eps=1e-05, momentum=None, affine=True, bias=True, track_running_stats=True)
    (5): Sequential(
      (0): Softmax(dim=1)
      (1): Identity()
    )
  )
  (loss): CrossEntropyLoss()
)"""


def test_repr_of_a_nested_model_is_pytorchs():
    assert repr(Encoder()) == ENCODER_REPR


def test_repr_of_leaves():
    assert repr(nn.Module()) == "Module()"
    assert repr(nn.Softplus()) == "Softplus(beta=1.0, threshold=20.0)"
    assert repr(nn.ReLU(inplace=True)) == "ReLU(inplace=True)"
    assert repr(nn.MSELoss(reduction="sum")) == "MSELoss()"
    assert repr(nn.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"
    assert repr(nn.LayerNorm([2, 3], elementwise_affine=False)) == (
        "LayerNorm((2, 3), eps=1e-05, elementwise_affine=False, bias=False)"
    )
    assert repr(nn.BatchNorm2d(3, affine=False)) == (
        "BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=False, bias=False, "
        "track_running_stats=True)"
    )

    class Multi(nn.Module):
        def extra_repr(self):
            return "a=1\nb=2"

    assert repr(Multi()) == "Multi(\n  a=1\n  b=2\n)"


def test_repr_matches_torch(torch):
    class TEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            tnn = torch.nn
            self.embed = tnn.Embedding(10, 8, padding_idx=0)
            self.attn = tnn.MultiheadAttention(8, 2, batch_first=True)
            self.layers = tnn.ModuleList([tnn.Linear(8, 8) for _ in range(3)] + [tnn.GELU()])
            self.heads = tnn.ModuleDict({"cls": tnn.Linear(8, 4), "reg": tnn.Linear(8, 1, False)})
            self.mlp = tnn.Sequential(
                tnn.LayerNorm(8),
                tnn.Linear(8, 16),
                tnn.ReLU(),
                tnn.Dropout(0.1),
                tnn.BatchNorm1d(16, momentum=None),
                tnn.Sequential(tnn.Softmax(dim=1), tnn.Identity()),
            )
            self.loss = tnn.CrossEntropyLoss(label_smoothing=0.1)

    TEncoder.__name__ = "Encoder"
    theirs = repr(TEncoder())
    if "bias=True" not in theirs.split("LayerNorm")[1].split("\n")[0]:
        pytest.skip("this PyTorch predates bias= in the LayerNorm/BatchNorm repr")
    assert repr(Encoder()) == theirs
    assert list(Encoder().state_dict()) == list(TEncoder().state_dict())


# ---- containers ----------------------------------------------------------------------------
def test_sequential_indexing_and_ordered_dict():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b, c)
    assert len(seq) == 3 and seq[0] is a and seq[-1] is c and list(seq) == [a, b, c]
    tail = seq[1:]
    assert isinstance(tail, nn.Sequential) and list(tail) == [b, c]
    assert list(tail._modules) == ["1", "2"]  # slicing keeps the names, as PyTorch
    with pytest.raises(IndexError, match="index 3"):
        seq[3]
    named = nn.Sequential(OrderedDict(fc=a, act=b))
    assert [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]
    x = dt.randn(4, 2)
    np.testing.assert_allclose(seq(x).detach().numpy(), c(b(a(x))).detach().numpy())
    seq.append(nn.Identity())
    assert len(seq) == 4


def test_module_list_and_dict():
    layers = nn.ModuleList([nn.Linear(1, 1)])
    layers.append(nn.Linear(1, 2)).extend([nn.ReLU()])
    assert len(layers) == 3 and [n for n, _ in layers.named_children()] == ["0", "1", "2"]
    layers[0] = nn.Identity()
    assert isinstance(layers[0], nn.Identity)
    assert isinstance(layers[1:], nn.ModuleList) and len(layers[1:]) == 2
    with pytest.raises(IndexError):
        layers[5] = nn.ReLU()
    heads = nn.ModuleDict({"a": nn.Linear(1, 1)})
    heads["b"] = nn.Linear(1, 1)
    assert "b" in heads and list(heads) == ["a", "b"] and len(heads) == 2
    assert list(heads.keys()) == ["a", "b"] and len(list(heads.values())) == 2
    del heads["a"]
    assert [n for n, _ in heads.named_parameters()] == ["b.weight", "b.bias"]
    assert [k for k, _ in heads.items()] == ["b"]


def test_sequential_delete_insert_extend_pop_renumber():
    a, b, c, d = (nn.Linear(i, i) for i in (1, 2, 3, 4))
    seq = nn.Sequential(a, b, c)
    del seq[1]
    assert list(seq) == [a, c] and list(seq._modules) == ["0", "1"]
    assert seq.insert(1, d) is seq and list(seq) == [a, d, c]
    seq.insert(-1, b)  # before the last, as list.insert
    assert list(seq) == [a, d, b, c]
    assert list(seq.state_dict())[-2:] == ["3.weight", "3.bias"]
    assert seq.pop(0) is a and list(seq) == [d, b, c] and list(seq._modules) == ["0", "1", "2"]
    popped = seq.pop(slice(1, None))
    assert isinstance(popped, nn.Sequential) and list(popped) == [b, c] and list(seq) == [d]
    assert seq.extend([a, b]) is seq and list(seq) == [d, a, b]
    seq[-1] = c
    assert list(seq) == [d, a, c]
    del seq[0:2]
    assert list(seq) == [c] and list(seq._modules) == ["0"]
    with pytest.raises(IndexError, match="index 5"):
        seq.insert(5, a)
    with pytest.raises(IndexError, match="index 1"):
        del seq[1]
    with pytest.raises(TypeError, match="not a Module"):
        seq.insert(0, "relu")
    assert list(seq) == [c]  # unchanged by the refused calls
    named = nn.Sequential(OrderedDict(fc=a, act=nn.ReLU()))
    del named[1]  # as PyTorch: the names give way to positions
    assert list(named._modules) == ["0"]


def test_module_list_delete_insert_pop_renumber():
    a, b, c, d = (nn.Linear(i, i) for i in (1, 2, 3, 4))
    layers = nn.ModuleList([a, b, c])
    del layers[0]
    assert list(layers) == [b, c] and [n for n, _ in layers.named_children()] == ["0", "1"]
    layers.insert(0, d)
    layers.insert(len(layers), a)
    assert list(layers) == [d, b, c, a]
    assert layers.pop(-2) is c and list(layers) == [d, b, a]
    assert list(layers.pop(slice(0, 2))) == [d, b] and list(layers) == [a]
    assert list(layers.state_dict()) == ["0.weight", "0.bias"]
    del layers[:]
    assert len(layers) == 0


def test_module_dict_update_pop_clear():
    a, b, c = nn.Linear(1, 1), nn.ReLU(), nn.Linear(2, 2)
    heads = nn.ModuleDict([("a", a)])  # pairs, as PyTorch
    heads.update({"b": b})
    heads.update([("c", c), ("a", b)])  # a replaced in place, order kept
    assert list(heads.items()) == [("a", b), ("b", b), ("c", c)]
    heads.update(nn.ModuleDict({"d": a}))
    assert heads.pop("c") is c and list(heads.keys()) == ["a", "b", "d"]
    with pytest.raises(KeyError):
        heads.pop("c")
    with pytest.raises(ValueError, match="element 0 has length 3"):
        heads.update([("x", a, b)])
    heads.clear()
    assert len(heads) == 0 and list(heads.parameters()) == []


def test_containers_edit_like_torch(torch):
    def edit(lib):
        seq = lib.Sequential(*(lib.Linear(i, i) for i in range(1, 5)))
        del seq[1]
        seq.insert(0, lib.Linear(7, 7))
        seq.insert(-2, lib.Linear(8, 8))
        seq.extend([lib.Linear(9, 9)])
        seq.pop(2)
        layers = lib.ModuleList(lib.Linear(i, i) for i in range(1, 5))
        del layers[1:3]
        layers.insert(1, lib.Linear(6, 6))
        layers.pop(0)
        heads = lib.ModuleDict([("a", lib.Linear(1, 1)), ("b", lib.Linear(2, 2))])
        heads.update([("c", lib.Linear(3, 3))])
        heads.pop("a")
        return [
            [(name, m.in_features) for name, m in container.named_children()]
            for container in (seq, layers, heads)
        ]

    assert edit(nn) == edit(torch.nn)


def test_module_without_forward_says_so():
    with pytest.raises(NotImplementedError, match="Module must define forward"):
        nn.Module()(1)


def test_parameters_and_modules_go_through_a_subclass_s_own_walk():
    class OnlyFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
            yield from self.a.named_parameters(prefix="a")

        def named_modules(self, memo=None, prefix="", remove_duplicate=True):
            yield "", self
            yield "a", self.a

    model = OnlyFirst()
    assert _same(model.parameters(), model.a.parameters())
    assert _same(model.modules(), [model, model.a])


def test_sequential_runs_a_linear_then_a_relu_as_one_op():
    dt.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3), nn.ReLU())
    x = dt.randn(6, 4, requires_grad=True)
    fused = model(x)
    assert fused.grad_fn.name() == "LinearReLUBackward0"
    (fused * dt.arange(3.0)).sum().backward()
    fused_grads = [x.grad.numpy().copy()] + [p.grad.numpy().copy() for p in model.parameters()]
    x.grad = None
    model.zero_grad()
    step = x
    for layer in model:  # the same layers one at a time
        step = layer(step)
    assert step.grad_fn.name() == "ReluBackward0"
    np.testing.assert_array_equal(fused.detach().numpy(), step.detach().numpy())
    assert (step.detach().numpy() == 0).any()  # some units are cut off
    (step * dt.arange(3.0)).sum().backward()
    grads = [x.grad.numpy()] + [p.grad.numpy() for p in model.parameters()]
    for got, expected in zip(fused_grads, grads):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_sequential_keeps_a_linear_and_a_relu_apart_where_something_would_see_between():
    seen = []
    hooked = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    hooked[1].register_forward_hook(lambda module, args, out: seen.append(out))
    assert hooked(dt.randn(2, 4)).grad_fn.name() == "ReluBackward0" and len(seen) == 1
    no_bias = nn.Sequential(nn.Linear(4, 8, bias=False), nn.ReLU())
    assert no_bias(dt.randn(2, 4, requires_grad=True)).grad_fn.name() == "ReluBackward0"


# ---- to(): devices, tensors, ints -------------------------------------------------------
@pytest.fixture
def emulated_cuda(monkeypatch):
    """CUDA on the CPU (``tests/runtime/cuda_emulator``): ``device="cuda"`` works here."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "runtime"))
    from cuda_emulator import install

    return install(monkeypatch)


def test_to_a_tensor_takes_its_device_and_dtype(emulated_cuda):
    target = dt.ones(2, device="cuda", dtype=dt.float64)
    m = nn.Linear(2, 2).to(target)
    assert str(m.weight.device) == "cuda:0" and m.weight.dtype == dt.float64
    assert str(nn.Linear(2, 2).to(target.device).weight.device) == "cuda:0"
    back = m.to(dt.zeros(1, dtype=dt.float32))
    assert str(back.weight.device) == "cpu" and back.weight.dtype == dt.float32


def test_to_an_int_is_a_cuda_index(emulated_cuda):
    m = nn.Linear(2, 2).to(0)
    assert str(m.weight.device) == "cuda:0" and str(m.bias.device) == "cuda:0"
    assert str(nn.Linear(2, 2).to(device=0).weight.device) == "cuda:0"
    with pytest.raises(ValueError, match="must not be negative"):
        nn.Linear(2, 2).to(-1)


def test_to_takes_positional_non_blocking_and_names_what_it_cannot_read():
    m = nn.Linear(1, 1)
    assert m.to("cpu", dt.float64, True).weight.dtype == dt.float64
    assert m.to(dt.float32, False).weight.dtype == dt.float32
    assert m.to("float64").weight.dtype == dt.float64
    for bad in ("bogus", "mps"):
        with pytest.raises(ValueError, match=f"'{bad}' is neither a device .* nor a dtype"):
            m.to(bad)
    with pytest.raises(TypeError, match="int64"):
        m.to(dt.zeros(1, dtype=dt.int64))


def test_to_matches_torch_for_tensors_and_positional_non_blocking(torch):
    def run(lib, module):
        m = module.Linear(2, 2)
        dtypes = [str(m.to(lib.zeros(1, dtype=lib.float64)).weight.dtype)]
        dtypes.append(str(m.to("cpu", lib.float16, True).weight.dtype))
        return [d.replace("torch.", "") for d in dtypes]

    assert run(dt, nn) == run(torch, torch.nn)


# ---- load_state_dict: assign, value types, old checkpoints ---------------------------------
def test_load_state_dict_assign_replaces_the_tensors():
    m = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    m[0].weight.requires_grad_(False)
    state = {
        k: v.double()
        for k, v in nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).state_dict().items()
    }
    old_weight = m[0].weight
    assert m.load_state_dict(state, assign=True) == ([], [])
    weight = m[0].weight
    assert weight is not old_weight and isinstance(weight, nn.Parameter)
    assert weight.dtype == dt.float64  # the checkpoint's dtype, as PyTorch's assign
    assert not weight.requires_grad and m[0].bias.requires_grad  # the module's requires_grad
    assert m[1].running_mean is state["1.running_mean"]
    np.testing.assert_array_equal(weight.numpy(), state["0.weight"].numpy())
    state["0.weight"].fill_(7.0)  # assigned, not copied: they share storage
    assert m[0].weight.numpy()[0, 0] == 7.0


def test_load_state_dict_assign_matches_torch(torch):
    def run(module):
        m = module.Linear(2, 2)
        m.load_state_dict(module.Linear(2, 2).state_dict(), assign=True)
        return type(m.weight).__name__, m.weight.requires_grad, m.bias.requires_grad

    assert run(nn) == run(torch.nn)


def test_load_state_dict_assign_still_checks_shapes():
    with pytest.raises(RuntimeError, match=r"'weight': size mismatch.*\(5, 5\).*\(2, 2\)"):
        nn.Linear(2, 2).load_state_dict({"weight": dt.ones(5, 5), "bias": dt.ones(2)}, assign=True)


def test_load_state_dict_names_values_that_are_not_tensors():
    with pytest.raises(TypeError, match=r"dict-like state_dict.*got list"):
        nn.Linear(1, 1).load_state_dict([1, 2])
    with pytest.raises(TypeError, match=r"'weight' holds a list; expected a Tensor or an array"):
        nn.Linear(1, 1).load_state_dict({"weight": [[1.0]], "bias": [2.0]})


def test_load_state_dict_accepts_a_one_element_entry_for_a_0d_buffer(torch):
    def run(lib, module):
        bn = module.BatchNorm1d(2)
        state = bn.state_dict()
        state["num_batches_tracked"] = lib.tensor([3])  # as old checkpoints saved it
        bn.load_state_dict(state)
        return bn.num_batches_tracked.item(), tuple(bn.num_batches_tracked.shape)

    assert run(dt, nn) == run(torch, torch.nn) == (3, ())


def test_load_state_dict_one_element_entry_by_hand():
    bn = nn.BatchNorm1d(2)
    state = bn.state_dict()
    state["num_batches_tracked"] = np.array([4])
    bn.load_state_dict(state)
    assert bn.num_batches_tracked.shape == () and bn.num_batches_tracked.item() == 4
    state["num_batches_tracked"] = np.array([4, 5])  # only the (1,) case is old format
    with pytest.raises(RuntimeError, match=r"size mismatch.*\(2,\).*\(\)"):
        bn.load_state_dict(state)


# ---- hooks: with_kwargs, prepend, handles ----------------------------------------------------
class Scale(nn.Module):
    def forward(self, a, b=1):
        return a * b


def test_forward_hooks_with_kwargs():
    m = Scale()
    seen = []
    m.register_forward_pre_hook(lambda mod, args, kwargs: (args, {"b": 5}), with_kwargs=True)
    m.register_forward_hook(
        lambda mod, args, kwargs, out: (seen.append(dict(kwargs)), out + 1)[1], with_kwargs=True
    )
    assert m(dt.ones(1), b=3).tolist() == [6.0]
    assert seen == [{"b": 5}]  # the forward hook sees the kwargs forward got


def test_forward_hooks_with_kwargs_match_torch(torch):
    def run(lib, module):
        class TScale(module.Module):
            def forward(self, a, b=1):
                return a * b

        m = TScale()
        seen = []
        m.register_forward_pre_hook(
            lambda mod, args, kwargs: (args, {"b": kwargs["b"] + 2}), with_kwargs=True
        )
        m.register_forward_hook(
            lambda mod, args, kwargs, out: (seen.append(sorted(kwargs)), out * 10)[1],
            with_kwargs=True,
        )
        return m(lib.ones(1), b=3).tolist(), seen

    assert run(dt, nn) == run(torch, torch.nn)


def test_a_kwargs_pre_hook_must_return_a_pair():
    m = Scale()
    m.register_forward_pre_hook(lambda mod, args, kwargs: args, with_kwargs=True)
    with pytest.raises(RuntimeError, match=r"with_kwargs=True.*pair \(args, kwargs\)"):
        m(dt.ones(1))  # returned (tensor,): not a pair


def test_prepend_runs_a_hook_first():
    m = nn.Identity()
    order = []
    m.register_forward_pre_hook(lambda *a: order.append("p1"))
    m.register_forward_pre_hook(lambda *a: order.append("p0"), prepend=True)
    m.register_forward_hook(lambda *a: order.append("f1"))
    m.register_forward_hook(lambda *a: order.append("f0"), prepend=True)
    m(dt.ones(1))
    assert order == ["p0", "p1", "f0", "f1"]


def test_a_hook_handle_is_a_context_manager_with_an_id():
    m = nn.Identity()
    calls = []
    with m.register_forward_hook(lambda *a: calls.append(1)) as handle:
        m(dt.ones(1))
    m(dt.ones(1))
    assert calls == [1] and not m._forward_hooks
    other = m.register_forward_pre_hook(lambda *a: None, with_kwargs=True)
    assert isinstance(handle.id, int) and other.id != handle.id
    other.remove()
    assert not m._forward_pre_hooks and not m._hooks_with_kwargs


def test_hooks_match_torch_for_prepend_and_context_manager(torch):
    def run(lib, module):
        m = module.Identity()
        order = []
        m.register_forward_hook(lambda *a: order.append(1))
        m.register_forward_hook(lambda *a: order.append(2), prepend=True)
        with m.register_forward_hook(lambda *a: order.append(3)) as handle:
            m(lib.ones(1))
        m(lib.ones(1))
        return order, hasattr(handle, "id")

    assert run(dt, nn) == run(torch, torch.nn)


# ---- lookups by dotted name ----------------------------------------------------------------
def test_get_parameter_buffer_and_submodule_by_dotted_name():
    model = nn.Sequential(nn.Linear(1, 2), nn.Sequential(nn.BatchNorm1d(2)))
    assert model.get_parameter("0.weight") is model[0].weight
    assert model.get_buffer("1.0.running_mean") is model[1][0].running_mean
    assert model.get_submodule("1.0") is model[1][0] and model.get_submodule("") is model
    with pytest.raises(AttributeError, match=r"Linear has no sub-module 'weight' \(it is a param"):
        model.get_submodule("0.weight")
    with pytest.raises(AttributeError, match=r"no parameter 'running_mean' \(it is a buffer\)"):
        model.get_parameter("1.0.running_mean")
    with pytest.raises(AttributeError, match=r"Sequential has no sub-module '5'"):
        model.get_buffer("5.running_mean")


def test_get_parameter_and_buffer_match_torch(torch):
    def run(module):
        model = module.Sequential(module.Linear(1, 1), module.BatchNorm1d(1))
        return tuple(model.get_parameter("0.weight").shape), tuple(
            model.get_buffer("1.running_var").shape
        )

    assert run(nn) == run(torch.nn)


def test_container_indices_must_be_integers():
    s = nn.Sequential(nn.ReLU(), nn.Tanh())
    assert isinstance(s[np.int64(1)], nn.Tanh)
    with pytest.raises(TypeError, match=r"integers or slices, not str \('0'\)"):
        s["0"]
    with pytest.raises(TypeError, match="not float"):
        nn.ModuleList([nn.ReLU()])[0.0]
