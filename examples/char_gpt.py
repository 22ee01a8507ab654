"""A character-level GPT trained on the Python standard library's own source files.

Token and position embeddings, pre-norm causal self-attention blocks with a GELU MLP,
AdamW with a linear warm-up then cosine decay. Prints the validation loss against a
unigram baseline, and samples some text at the end.

    python examples/char_gpt.py                            # a few minutes on 2 cores
    python examples/char_gpt.py --steps 200 --checkpoint gpt.safetensors
    python examples/char_gpt.py --steps 400 --checkpoint gpt.safetensors --resume
"""

from __future__ import annotations

import argparse
import math
import os
import sysconfig

import common
import numpy as np

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR


def load_corpus(max_chars: int) -> str:
    """The first ``max_chars`` characters of the standard library's top-level modules,
    in sorted order: the same text on every machine with the same Python version."""
    root = sysconfig.get_paths()["stdlib"]
    names = sorted(n for n in os.listdir(root) if n.endswith(".py"))
    parts, size = [], 0
    for name in names:
        with open(os.path.join(root, name), encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        parts.append(text)
        size += len(text)
        if size >= max_chars:
            break
    return "".join(parts)[:max_chars]


class CausalSelfAttention(nn.Module):
    def __init__(self, embed: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(embed, 3 * embed)
        self.proj = nn.Linear(embed, embed)
        self.dropout = dropout

    def forward(self, x: dt.Tensor) -> dt.Tensor:
        batch, length, embed = x.shape
        q, k, v = (
            t.reshape(batch, length, self.heads, embed // self.heads).transpose(1, 2)
            for t in self.qkv(x).split(embed, dim=2)
        )
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(batch, length, embed))


class Block(nn.Module):
    def __init__(self, embed: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(embed)
        self.attn = CausalSelfAttention(embed, heads, dropout)
        self.ln2 = nn.LayerNorm(embed)
        self.mlp = nn.Sequential(
            nn.Linear(embed, 4 * embed), nn.GELU(), nn.Linear(4 * embed, embed), nn.Dropout(dropout)
        )

    def forward(self, x: dt.Tensor) -> dt.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int, block: int, embed: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.block = block
        self.tok_emb = nn.Embedding(vocab, embed)
        self.pos_emb = nn.Embedding(block, embed)
        self.blocks = nn.ModuleList(Block(embed, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(embed)
        self.head = nn.Linear(embed, vocab, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying, as GPT-2 does
        for name, param in self.named_parameters():
            if name.endswith("weight") and param.ndim == 2:
                nn.init.normal_(param, 0.0, 0.02)

    def forward(self, idx: dt.Tensor) -> dt.Tensor:
        positions = dt.arange(idx.shape[1], device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    @dt.no_grad()
    def generate(
        self, idx: dt.Tensor, count: int, temperature: float, generator: dt.Generator
    ) -> dt.Tensor:
        for _ in range(count):
            logits = self(idx[:, -self.block :])[:, -1, :] / temperature
            next_id = dt.multinomial(logits.softmax(-1), 1, generator=generator)
            idx = dt.cat([idx, next_id], dim=1)
        return idx


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--block", type=int, default=64, help="context length in characters")
    parser.add_argument("--embed", type=int, default=96)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--corpus-chars", type=int, default=1_000_000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-batches", type=int, default=20)
    parser.add_argument("--sample-chars", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="save here at every evaluation")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument(
        "--stop-after", type=int, help="stop after this step, as if interrupted (then --resume)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    common.add_device_argument(parser)
    return parser.parse_args(argv)


def batch_of(
    data: np.ndarray, args: argparse.Namespace, rng: dt.Generator, device: dt.device
) -> tuple:
    starts = rng.numpy.integers(0, len(data) - args.block - 1, size=args.batch_size)
    windows = np.stack([data[s : s + args.block + 1] for s in starts])
    return dt.tensor(windows[:, :-1], device=device), dt.tensor(windows[:, 1:], device=device)


def unigram_loss(train: np.ndarray, val: np.ndarray, vocab: int) -> float:
    """Cross-entropy of the validation text under the training text's character counts."""
    counts = np.bincount(train, minlength=vocab) + 1.0  # add-one: every char has a chance
    return float(-np.log(counts[val] / counts.sum()).mean())


def train(args: argparse.Namespace) -> dict:
    device = common.pick_device(args.device)
    rank, _world = common.setup_distributed(device)
    dt.manual_seed(args.seed)
    text = load_corpus(args.corpus_chars)
    chars = sorted(set(text))
    encode = {c: i for i, c in enumerate(chars)}
    data = np.array([encode[c] for c in text], dtype=np.int64)
    split = int(0.9 * len(data))
    train_data, val_data = data[:split], data[split:]
    net = GPT(len(chars), args.block, args.embed, args.layers, args.heads, args.dropout)
    net = net.to(device)
    model = common.wrap_model(net)  # DistributedDataParallel when several ranks run
    decay = [p for p in net.parameters() if p.ndim >= 2]
    no_decay = [p for p in net.parameters() if p.ndim < 2]
    optimizer = dt.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.99),
    )
    warmup = max(1, min(args.warmup, args.steps - 1))
    scheduler = SequentialLR(
        optimizer,
        [
            LinearLR(optimizer, 0.01, 1.0, total_iters=warmup),
            CosineAnnealingLR(optimizer, T_max=max(1, args.steps - warmup), eta_min=args.lr / 10),
        ],
        milestones=[warmup],
    )
    data_rng = dt.Generator().manual_seed(args.seed + 1000 * rank)  # each rank its own batches
    eval_rng = dt.Generator().manual_seed(args.seed + 1)
    baseline = unigram_loss(train_data, val_data, len(chars))
    common.log(
        f"corpus {len(text):,} chars, vocabulary {len(chars)}, "
        f"{sum(p.numel() for p in net.parameters()):,} parameters; "
        f"unigram baseline {baseline:.3f} nats/char"
    )

    step = 0
    state = common.maybe_resume(args.checkpoint, args.resume, model, optimizer)
    if state is not None:
        step = state["step"]
        scheduler.load_state_dict(state["scheduler"])
        data_rng.set_state(state["data_rng"])

    def evaluate() -> float:
        net.eval()
        eval_rng.manual_seed(args.seed + 1)  # the same validation batches every time
        with dt.no_grad():
            losses = [
                F.cross_entropy(net(x).reshape(-1, len(chars)), y.reshape(-1)).item()
                for x, y in (
                    batch_of(val_data, args, eval_rng, device) for _ in range(args.eval_batches)
                )
            ]
        net.train()
        return float(np.mean(losses))

    losses = []
    end = args.steps if args.stop_after is None else min(args.stop_after, args.steps)
    bar = common.progress(range(step, end), disable=args.quiet, desc="steps")
    for step in bar:
        x, y = batch_of(train_data, args, data_rng, device)
        loss = F.cross_entropy(model(x).reshape(-1, len(chars)), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            val = evaluate()
            common.log(
                f"step {step + 1}: train loss {np.mean(losses[-50:]):.3f}, val loss {val:.3f} "
                f"(unigram {baseline:.3f})"
            )
            if args.checkpoint:
                common.save_checkpoint(
                    args.checkpoint,
                    model,
                    optimizer,
                    step=step + 1,
                    scheduler=scheduler.state_dict(),
                    data_rng=data_rng.get_state(),
                )
    val = evaluate()
    prompt = dt.tensor([[encode[c] for c in "def "]], device=device)
    sample = net.generate(prompt, args.sample_chars, 0.8, dt.Generator().manual_seed(args.seed))
    common.log("sample:\n" + "".join(chars[i] for i in sample[0].tolist()))
    return {
        "val_loss": val,
        "baseline": baseline,
        "final_train_loss": losses[-1] if losses else math.nan,
    }


def main(argv: list[str] | None = None) -> int:
    train(parse(argv))
    common.finish_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
