"""char_gpt.py's model trained with FullyShardedDataParallel, checkpointed with
``dtrain.distributed.checkpoint``: each rank keeps and saves only its shard of the
parameters and of AdamW's state, and a run resumes on another number of ranks.

    dtrain launch --nodes 2 examples/fsdp_gpt.py --steps 200 --checkpoint-dir /tmp/gpt
    dtrain launch --nodes 3 examples/fsdp_gpt.py --steps 400 --checkpoint-dir /tmp/gpt --resume

Each step's global batch is drawn from the step number alone and split across the ranks,
so the training does not depend on the world size: a run resumed on 3 ranks continues as
the 2-rank run would have (to float32 round-off).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os

import char_gpt
import common
import numpy as np

import dtrain as dt
import dtrain.distributed.checkpoint as dcp
import dtrain.nn.functional as F
import dtrain.parallel as dist
from dtrain.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from dtrain.distributed.fsdp import FullyShardedDataParallel as FSDP  # noqa: N817 - torch's idiom
from dtrain.distributed.fsdp.wrap import transformer_auto_wrap_policy


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=24, help="global, split across ranks")
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--embed", type=int, default=96)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--corpus-chars", type=int, default=1_000_000)
    parser.add_argument("--eval-batches", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-dir", help="a distributed checkpoint (a directory)")
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    parser.add_argument("--stop-after", type=int, help="stop (as if killed) after this step")
    parser.add_argument("--metrics", help="rank 0 writes each step's loss here, as JSON")
    common.add_device_argument(parser)
    return parser.parse_args(argv)


def learning_rate(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up, then cosine decay to a tenth: a function of the step alone, so a
    checkpoint needs no scheduler state."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr / 10 + 0.45 * args.lr * (1 + math.cos(math.pi * progress))


def global_batch(data: np.ndarray, step: int, args: argparse.Namespace) -> tuple:
    """Step ``step``'s whole batch (the same on every rank and every world size)."""
    starts = np.random.default_rng([args.seed, step]).integers(
        0, len(data) - args.block - 1, args.batch_size
    )
    rows = np.stack([data[s : s + args.block + 1] for s in starts])
    return rows[:, :-1], rows[:, 1:]


def my_rows(rows: np.ndarray, rank: int, world: int, device: dt.device) -> dt.Tensor:
    if len(rows) % world:
        raise SystemExit(
            f"--batch-size {len(rows)} must divide among {world} ranks; pick a multiple of {world}"
        )
    share = len(rows) // world
    return dt.tensor(rows[rank * share : (rank + 1) * share], device=device)


def checkpoint_state(model: dt.nn.Module, optimizer: dt.optim.Optimizer, step: int) -> dict:
    """What a checkpoint holds: this rank's shards (``ShardedTensor``s) and the step."""
    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optim": optim_state, "step": step}


def train(args: argparse.Namespace) -> dict:
    device = common.pick_device(args.device)
    rank, world = common.setup_distributed(device)
    if not dist.is_initialized():  # one process: FSDP still needs a group
        dist.init_process_group("tcp", rank=0, world_size=1, init_method="tcp://127.0.0.1:0")
    dt.manual_seed(args.seed)  # the same initial weights on every rank
    text = char_gpt.load_corpus(args.corpus_chars)
    chars = sorted(set(text))
    encode = {c: i for i, c in enumerate(chars)}
    data = np.array([encode[c] for c in text], dtype=np.int64)
    split = int(0.9 * len(data))
    train_data, val_data = data[:split], data[split:]
    net = char_gpt.GPT(len(chars), args.block, args.embed, args.layers, args.heads, 0.0)
    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={char_gpt.Block})
    model = FSDP(net.to(device), auto_wrap_policy=policy)
    optimizer = dt.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99))
    common.log(
        f"{world} rank(s), vocabulary {len(chars)}, {sum(p.numel() for p in net.parameters()):,}"
        " parameters on this rank (its shards)"
    )

    start = 0
    if args.resume and args.checkpoint_dir and os.path.exists(args.checkpoint_dir):
        state = checkpoint_state(model, optimizer, 0)  # this rank's ranges, to fill
        dcp.load(state, checkpoint_id=args.checkpoint_dir)
        set_state_dict(
            model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
        start = state["step"]
        common.log(f"resumed from {args.checkpoint_dir} at step {start}")

    losses: dict[int, float] = {}
    end = args.steps if args.stop_after is None else min(args.stop_after, args.steps)
    for step in range(start, end):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        inputs, targets = global_batch(train_data, step, args)
        logits = model(my_rows(inputs, rank, world, device))
        loss = F.cross_entropy(
            logits.reshape(-1, len(chars)), my_rows(targets, rank, world, device).reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        model.clip_grad_norm_(1.0)
        optimizer.step()
        mean = dt.tensor([loss.item() / world])
        dist.all_reduce(mean)  # the global batch's loss: the mean of the ranks' means
        losses[step] = float(mean.item())
        done = step + 1
        if args.checkpoint_dir and (done % args.save_every == 0 or done == end):
            dcp.save(checkpoint_state(model, optimizer, done), checkpoint_id=args.checkpoint_dir)
        if done % 50 == 0 or done == end:
            common.log(f"step {done}: train loss {losses[step]:.3f}")

    model.eval()
    with dt.no_grad():
        val = []
        for index in range(args.eval_batches):
            inputs, targets = global_batch(val_data, 10**6 + index, args)
            logits = model(my_rows(inputs, rank, world, device))
            part = F.cross_entropy(
                logits.reshape(-1, len(chars)), my_rows(targets, rank, world, device).reshape(-1)
            )
            total = dt.tensor([part.item() / world])
            dist.all_reduce(total)
            val.append(float(total.item()))
    baseline = char_gpt.unigram_loss(train_data, val_data, len(chars))
    common.log(f"val loss {np.mean(val):.3f} (unigram baseline {baseline:.3f})")
    result = {"losses": losses, "val_loss": float(np.mean(val)), "baseline": baseline}
    if args.metrics and rank == 0:
        with open(args.metrics, "w") as handle:
            json.dump({**result, "losses": {str(k): v for k, v in losses.items()}}, handle)
    return result


def main(argv: list[str] | None = None) -> int:
    train(parse(argv))
    common.finish_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
