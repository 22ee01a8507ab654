"""Time one training step of the character GPT in dtrain against the same model in PyTorch.

The model is ``examples/char_gpt.GPT`` with the example's default sizes: vocabulary 96, context
64, embedding 96, 3 pre-norm blocks of 4-head causal self-attention and a GELU MLP, tied
token-embedding / output weights, no dropout. One step, as the example trains: ``loss =
F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))``, ``zero_grad``, ``backward``,
``clip_grad_norm_(1.0)``, ``AdamW`` (lr 3e-3, betas (0.9, 0.99), weight decay 0.1 on the
matrices and 0 on the rest), ``loss.item()``, on a batch of 32 random token windows.

The torch model re-implements the architecture with ``torch.nn`` under the same parameter
names (``F.scaled_dot_product_attention(is_causal=True)``, exact ``nn.GELU``, ``LayerNorm``,
tied weights) and starts from dtrain's weights (``load_state_dict``). Before timing, the
script checks that both give the same loss and gradients on the first step and the same loss
after a few steps. Then each runs ``--steps`` timed steps in ``--rounds`` blocks, taking turns.

    python bench/step_gpt.py                   # defaults: 30 steps, all CPUs
    python bench/step_gpt.py --threads 1
    python bench/step_gpt.py --profile 10      # also cProfile 10 dtrain steps

Page faults: the table counts minor page faults per step. Arrays freed by one step that glibc
gives back to the OS are mapped afresh by the next, and dtrain's many temporaries make this a
large share of its step; ``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824
python bench/<script>.py`` keeps freed memory in the heap and shows the step without them.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from harness import (
    LoadMeter,
    cpu_name,
    import_example,
    print_timings,
    profile,
    relative_error,
    set_numpy_threads,
    time_variants,
    to_torch_state,
)

import dtrain as dt
import dtrain.nn.functional

try:
    import torch
except ImportError:  # torch is the baseline; without it there is nothing to compare
    torch = None

LEARNING_RATE = 3e-3
BETAS = (0.9, 0.99)
WEIGHT_DECAY = 0.1
MAX_GRAD_NORM = 1.0
CHECK_STEPS = 3  # AdamW steps before the second loss comparison


if torch is not None:
    nn = torch.nn

    class TorchAttention(nn.Module):
        """examples/char_gpt.CausalSelfAttention in torch (dropout 0)."""

        def __init__(self, embed: int, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(embed, 3 * embed)
            self.proj = nn.Linear(embed, embed)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            batch, length, embed = x.shape
            q, k, v = (
                t.reshape(batch, length, self.heads, embed // self.heads).transpose(1, 2)
                for t in self.qkv(x).split(embed, dim=2)
            )
            y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.proj(y.transpose(1, 2).reshape(batch, length, embed))

    class TorchBlock(nn.Module):
        def __init__(self, embed: int, heads: int) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(embed)
            self.attn = TorchAttention(embed, heads)
            self.ln2 = nn.LayerNorm(embed)
            self.mlp = nn.Sequential(
                nn.Linear(embed, 4 * embed), nn.GELU(), nn.Linear(4 * embed, embed), nn.Dropout(0)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class TorchGPT(nn.Module):
        """examples/char_gpt.GPT in torch, with the same parameter names."""

        def __init__(self, vocab: int, block: int, embed: int, layers: int, heads: int) -> None:
            super().__init__()
            self.tok_emb = nn.Embedding(vocab, embed)
            self.pos_emb = nn.Embedding(block, embed)
            self.blocks = nn.ModuleList(TorchBlock(embed, heads) for _ in range(layers))
            self.ln_f = nn.LayerNorm(embed)
            self.head = nn.Linear(embed, vocab, bias=False)
            self.head.weight = self.tok_emb.weight

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1], device=idx.device))
            for block in self.blocks:
                x = block(x)
            return self.head(self.ln_f(x))


class Step:
    """One training step as examples/char_gpt.py writes it (without the lr scheduler)."""

    def __init__(self, model: Any, lib: Any, functional: Any, clip: Callable) -> None:
        self.model, self.functional, self.clip = model, functional, clip
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        self.optimizer = lib.optim.AdamW(
            [
                {"params": decay, "weight_decay": WEIGHT_DECAY},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=LEARNING_RATE,
            betas=BETAS,
        )

    def loss(self, x: Any, y: Any) -> Any:
        logits = self.model(x)
        return self.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def __call__(self, x: Any, y: Any) -> float:
        loss = self.loss(x, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.clip(self.model.parameters(), MAX_GRAD_NORM)
        self.optimizer.step()
        return loss.item()

    def loss_and_grads(self, x: Any, y: Any) -> tuple[float, dict[str, np.ndarray]]:
        """The loss and every parameter's gradient, by name, without updating."""
        self.optimizer.zero_grad()
        loss = self.loss(x, y)
        loss.backward()
        grads = {name: p.grad.numpy().copy() for name, p in self.model.named_parameters()}
        return loss.item(), grads


def make_steps(args: argparse.Namespace) -> tuple[Step, Step | None]:
    """The dtrain step on char_gpt.GPT and the torch step on a copy of its weights."""
    char_gpt = import_example("char_gpt")
    dt.manual_seed(args.seed)
    sizes = (args.vocab, args.block, args.embed, args.layers, args.heads)
    model = char_gpt.GPT(*sizes, dropout=0.0)
    dtrain_step = Step(model, dt, dtrain.nn.functional, dt.nn.utils.clip_grad_norm_)
    if torch is None:
        return dtrain_step, None
    torch_model = TorchGPT(*sizes)
    torch_model.load_state_dict(to_torch_state(model.state_dict()))
    return dtrain_step, Step(torch_model, torch, torch.nn.functional, nn.utils.clip_grad_norm_)


def make_batch(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Random token windows (int64) and their next tokens, as char_gpt.batch_of cuts them."""
    rng = np.random.default_rng(args.seed + 1)
    windows = rng.integers(0, args.vocab, size=(args.batch, args.block + 1), dtype=np.int64)
    return windows[:, :-1].copy(), windows[:, 1:].copy()


def check_same_math(args: argparse.Namespace, x: np.ndarray, y: np.ndarray) -> bool:
    """Same loss and gradients on the first step, same loss after ``CHECK_STEPS`` steps."""
    dtrain_step, torch_step = make_steps(args)
    dx, dy, tx, ty = dt.tensor(x), dt.tensor(y), torch.from_numpy(x), torch.from_numpy(y)
    loss_d, grads_d = dtrain_step.loss_and_grads(dx, dy)
    loss_t, grads_t = torch_step.loss_and_grads(tx, ty)
    errors = {name: relative_error(grads_d[name], g) for name, g in grads_t.items()}
    worst = max(errors, key=errors.get)
    for _ in range(CHECK_STEPS):
        later_d, later_t = dtrain_step(dx, dy), torch_step(tx, ty)
    loss_error = relative_error(loss_d, loss_t)
    later_error = relative_error(later_d, later_t)
    ok = max(loss_error, later_error, errors[worst]) <= args.tolerance
    print(f"check vs torch, same weights and batch, float32 (tolerance {args.tolerance:g}):")
    print(f"  first step: loss {loss_d:.6f} (torch {loss_t:.6f}, rel err {loss_error:.0e})")
    print(f"  first step: grads max rel err {errors[worst]:.0e} (worst: {worst})")
    print(
        f"  after {CHECK_STEPS} AdamW steps: loss {later_d:.6f} (torch {later_t:.6f}, rel err "
        f"{later_error:.0e})  {'OK' if ok else 'MISMATCH'}"
    )
    return ok


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=30, help="timed steps (median of these)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before each block")
    parser.add_argument("--rounds", type=int, default=5, help="blocks the variants take turns at")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--block", type=int, default=64, help="context length")
    parser.add_argument("--vocab", type=int, default=96, help="char_gpt's corpus has 96")
    parser.add_argument("--embed", type=int, default=96)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="BLAS threads for numpy (OpenBLAS) and torch (set_num_threads); default: all CPUs",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="same-math check")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="also cProfile N dtrain steps"
    )
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.threads < 1 or not 1 <= args.rounds <= args.steps:
        raise ValueError(
            f"--steps {args.steps}, --warmup {args.warmup}, --threads {args.threads}, --rounds "
            f"{args.rounds}: give positive steps and threads, warmup ≥ 0, 1 ≤ rounds ≤ steps"
        )
    if args.embed % args.heads:
        raise ValueError(f"--embed {args.embed} must be a multiple of --heads {args.heads}")
    if torch is None:
        print("torch is not installed: nothing to compare with (pip install torch)")
        return 1
    numpy_blas = set_numpy_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({cpu_name()}); Python "
        f"{platform.python_version()}; numpy {np.__version__} ({numpy_blas}); torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads)"
    )
    print(
        f"char GPT: vocab {args.vocab}, context {args.block}, embed {args.embed}, "
        f"{args.layers} layers, {args.heads} heads; batch {args.batch}, float32, AdamW lr "
        f"{LEARNING_RATE}, clip {MAX_GRAD_NORM}; {args.steps} timed steps each in "
        f"{args.rounds} round(s)"
    )
    x, y = make_batch(args)
    if not check_same_math(args, x, y):
        print("dtrain and torch do not compute the same math; timings would not be comparable")
        return 1
    print()

    dtrain_step, torch_step = make_steps(args)
    dx, dy, tx, ty = dt.tensor(x), dt.tensor(y), torch.from_numpy(x), torch.from_numpy(y)
    variants: dict[str, Callable[[], Any]] = {
        "torch": lambda: torch_step(tx, ty),
        "dtrain": lambda: dtrain_step(dx, dy),
    }
    progress = not args.no_progress and sys.stderr.isatty()
    meter = LoadMeter()
    meter.start()
    times, faults = time_variants(variants, args.warmup, args.steps, args.rounds, progress)
    load = meter.stop()
    medians = print_timings(times, faults)
    print(load)
    print(f"\ndtrain / torch {medians['dtrain'] / medians['torch']:.2f}")

    if args.profile:
        print(f"\ncProfile of {args.profile} dtrain steps:")
        print(profile(lambda: dtrain_step(dx, dy), args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
