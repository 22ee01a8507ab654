"""dtrain launch: run a training script as N nodes x P ranks on a Ray cluster.

usage:
  dtrain launch [--nodes N] [--procs-per-node P | --gpus-per-node G] [--cpus-per-proc C]
                [--address RAY_ADDRESS] [--backend auto|tcp|nccl] [--max-restarts K]
                [--log-dir DIR] [--timeout S] [--env KEY=VALUE ...]
                [-m | --no-python] script.py|module|program [script args ...]
  torchrun's flags work too: --nproc_per_node P|auto|cpu|gpu, --nnodes N|N:N, --standalone,
  --master-addr, --master-port, --node-rank 0, --max_restarts, --log_dir (options below;
  docs/launch.md, "Coming from torchrun", says what each does here)

examples:
  dtrain launch --nodes 4 examples/mlp_digits.py --epochs 5   # 4 simulated nodes, here
  dtrain launch --nodes 2 --procs-per-node 2 train.py         # 4 ranks, 2 per node
  dtrain launch --address 10.0.0.1:6379 --nodes 8 --gpus-per-node 4 train.py
  dtrain launch --nodes 4 --max-restarts 3 train.py --checkpoint ckpt.safetensors --resume
  dtrain launch --nodes 2 --log-dir logs --env DTRAIN_DEBUG=1 -m mypackage.train
  dtrain launch --standalone --nproc_per_node 4 train.py     # a torchrun command, renamed

where it runs:
  --address (or RAY_ADDRESS) joins that Ray cluster. Without one, a cluster that
  `ray start --head` left running on this machine is joined; otherwise an embedded Ray
  cluster is started for the job and stopped after it (--address local forces that). The
  embedded cluster listens on 127.0.0.1 only and simulates --nodes nodes on this machine
  with Ray's own several-nodes-on-one-host support, so a laptop takes the same scheduling
  path as a real cluster.

scheduling:
  A placement group holds one bundle per node, on distinct nodes (STRICT_SPREAD): P x C
  CPUs, and G GPUs, each. The launcher waits --placement-timeout seconds for the cluster
  to offer them, then fails saying what the cluster has. With --gpus-per-node G each node
  runs G ranks with one GPU each: every rank sees the node's G (CUDA_VISIBLE_DEVICES) and
  trains on cuda:LOCAL_RANK (DTRAIN_DEVICE), as under torchrun.

the ranks:
  Each rank is a fresh `python script.py args` (or `python -m module args`, or with
  --no-python `program args`) process in the launcher's working directory, its sys.argv[0]
  the script as typed, with torchrun's environment: RANK, LOCAL_RANK, WORLD_SIZE,
  LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR and MASTER_PORT (rank 0's node, and a port free
  there, or --master-port), GROUP_RANK, GROUP_WORLD_SIZE, ROLE_NAME, ROLE_RANK,
  ROLE_WORLD_SIZE, TORCHELASTIC_RUN_ID, TORCHELASTIC_RESTART_COUNT and
  TORCHELASTIC_MAX_RESTARTS, plus DTRAIN_SECRET (random for each attempt),
  DTRAIN_RESTART_COUNT (0, then 1, 2 ... after restarts), DTRAIN_BACKEND (when --backend is
  not auto), OMP_NUM_THREADS (C) and PYTHONUNBUFFERED=1; --env adds or overrides others.
  A script that calls dtrain.parallel.init_process_group() needs nothing else, and still
  runs unchanged as `python train.py` or `mpiexec -n 4 python train.py`, without Ray.

output:
  Every line a rank writes comes back as it is written, as `[rank N] line` on the
  launcher's stdout (stderr for the rank's stderr), and into --log-dir/rank_N.log.

failures:
  The launcher exits 0 only if every rank exits 0. When a rank fails (non-zero exit, a
  signal, or its node lost) the others are stopped (SIGTERM, SIGKILL 3 s later) and a
  summary names the rank that failed first, its node, its exit code or signal, and the end
  of its traceback; the launcher exits with that rank's code (128+N for signal N). With
  --max-restarts K the whole group starts again, up to K times, with a new rendezvous (new
  secret, and a new port unless --master-port); scripts resume from their checkpoint
  (DTRAIN_RESTART_COUNT > 0 tells them they are a restart). --timeout S stops the job
  after S seconds (exit code 124). Ctrl-C or SIGTERM stops every rank, then the embedded
  cluster (exit code 130 or 143).

Ray only starts the processes and carries their output; ranks exchange tensors directly
(tcp, nccl), so a training step never goes through Ray. See docs/launch.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from dtrain.launch import torchrun
from dtrain.launch.plan import Plan as Plan
from dtrain.launch.plan import validate
from dtrain.launch.ray_run import EXIT_TIMEOUT as EXIT_TIMEOUT
from dtrain.launch.ray_run import Signals, StoppedBySignalError, _run, _say

BACKENDS = ("auto", "tcp", "mpi", "nccl")
EXIT_USAGE = 2


def get_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dtrain launch``."""
    parser = argparse.ArgumentParser(
        prog="dtrain launch",
        description=__doc__.split("\n\n", 2)[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_argument_group("where and how many")
    where.add_argument("--nodes", type=int, metavar="N", help="nodes (default 1)")
    per_node = where.add_mutually_exclusive_group()
    per_node.add_argument(
        "--procs-per-node",
        "--nproc-per-node",
        "--nproc_per_node",
        type=torchrun.nproc_value,
        metavar="P",
        help="ranks per node (default 1); torchrun's auto, cpu, gpu count this machine's",
    )
    per_node.add_argument(
        "--gpus-per-node",
        type=int,
        metavar="G",
        help="GPUs per node: G ranks per node, one GPU each",
    )
    where.add_argument(
        "--cpus-per-proc",
        type=float,
        default=1.0,
        metavar="C",
        help="CPUs Ray reserves for each rank; also its OMP_NUM_THREADS (default 1)",
    )
    where.add_argument(
        "--address",
        metavar="RAY_ADDRESS",
        help="Ray cluster to join (default: $RAY_ADDRESS, a local `ray start` cluster, or an "
        "embedded one); 'local' always starts an embedded cluster",
    )
    where.add_argument(
        "--placement-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="how long to wait for the cluster to offer the nodes (default 60)",
    )
    job = parser.add_argument_group("the job")
    job.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="collective backend the script's init_process_group() should use (DTRAIN_BACKEND)",
    )
    job.add_argument(
        "--max-restarts",
        "--max_restarts",
        type=int,
        default=0,
        metavar="K",
        help="restart the whole group up to K times after a failure (default 0)",
    )
    job.add_argument(
        "--log-dir",
        "--log_dir",
        metavar="DIR",
        help="also write each rank's output to DIR/rank_N.log",
    )
    job.add_argument(
        "--timeout", type=float, metavar="S", help="stop the job after S seconds (exit 124)"
    )
    job.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set an environment variable in every rank (repeat the flag for more)",
    )
    job.add_argument(
        "-m",
        "--module",
        action="store_true",
        help="run the script argument as a module, as `python -m module`",
    )
    torchrun.add_arguments(parser)
    parser.add_argument("script", metavar="script.py|module", help="what every rank runs")
    parser.add_argument(
        "script_args", nargs=argparse.REMAINDER, metavar="args", help="its arguments"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dtrain launch``; returns the exit code (0 only if every rank exited 0)."""
    parser = get_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        plan = validate(args)
    except ValueError as exc:
        parser.print_usage(sys.stderr)
        print(f"dtrain launch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    signals = Signals()
    signals.install()
    try:
        return _run(args, plan, signals)
    except StoppedBySignalError as exc:
        _say(f"stopped by {signal.Signals(exc.signum).name}")
        return 128 + exc.signum
    except ValueError as exc:  # what only the cluster could tell (GPUs, node sizes)
        print(f"dtrain launch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:
        _say(f"error: {exc}")
        return 1
    finally:
        signals.restore()


if __name__ == "__main__":
    sys.exit(main())
