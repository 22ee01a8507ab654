"""The program each ``TorchTrainer`` worker runs: ``python -m dtrain.launch.trainer_worker
SPEC.json``, one rank of a ``dtrain launch`` job.

It reads the run's spec (JSON, written by ``fit()``), imports the training function by
reference (``trainer_refs.load_function``: nothing is unpickled), joins the process group
(backend and timeout from ``TorchConfig``), starts the session that ``report``,
``get_context`` and ``get_checkpoint`` use, and calls the function with the config. An
exception ends the process with a traceback and exit code 1, which the launcher reports.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from dtrain.launch import trainer_session
from dtrain.launch.trainer_refs import load_function


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker; returns 0 when the training function returned."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 1:
        print("usage: python -m dtrain.launch.trainer_worker SPEC.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as handle:
        spec = json.load(handle)
    trainer_session.importing_user_code = True
    try:
        fn = load_function(spec["function"])
    finally:
        trainer_session.importing_user_code = False
    import dtrain.parallel as dist

    # DTRAIN_BACKEND (dtrain launch --backend) says the backend; none: nccl on a GPU, else tcp.
    dist.init_process_group(timeout=spec.get("timeout_s"))
    trainer_session.begin(spec)
    try:
        if spec["takes_config"]:
            fn(spec["config"])
        else:
            fn()
    finally:
        trainer_session.end()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
