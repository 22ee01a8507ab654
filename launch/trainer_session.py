"""Inside a ``TorchTrainer`` worker: ``get_context()``, ``report()`` and ``get_checkpoint()``.

A worker is one rank of a ``dtrain launch`` job running ``dtrain.launch.trainer_worker``,
which starts the session below before it calls the training function. ``report`` is a
barrier, as in Ray Train: every rank copies its checkpoint's files (if it has one) into its
own staging folder, then rank 0 merges them (same-named files: the lowest rank's wins),
renames the result to the run's next ``checkpoint_<n>``, records its own metrics (Ray Train 2
keeps rank 0's), prunes, and every rank goes on together.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from dtrain.launch import trainer_storage as storage
from dtrain.launch.trainer_checkpoint import Checkpoint
from dtrain.launch.trainer_refs import check_json

_OUTSIDE = (
    "{name}() works only inside the training function that TorchTrainer.fit() runs on each "
    "worker; call it from train_loop_per_worker"
)


class TrainContext:
    """Where this worker stands in the job, as Ray Train's ``TrainContext``."""

    def __init__(self, spec: dict[str, Any], env: dict[str, str]) -> None:
        self._name = spec["name"]
        self._run_dir = spec["run_dir"]
        self._rank = int(env.get("RANK", 0))
        self._local_rank = int(env.get("LOCAL_RANK", 0))
        self._world = int(env.get("WORLD_SIZE", 1))
        self._local_world = int(env.get("LOCAL_WORLD_SIZE", 1))
        self._node_rank = int(env.get("NODE_RANK", 0))

    def get_world_rank(self) -> int:
        """This worker's rank among all workers (``RANK``)."""
        return self._rank

    def get_local_rank(self) -> int:
        """This worker's rank on its node (``LOCAL_RANK``)."""
        return self._local_rank

    def get_world_size(self) -> int:
        """How many workers the job has (``WORLD_SIZE``)."""
        return self._world

    def get_local_world_size(self) -> int:
        """How many workers run on this worker's node (``LOCAL_WORLD_SIZE``)."""
        return self._local_world

    def get_node_rank(self) -> int:
        """The index of this worker's node (``NODE_RANK``)."""
        return self._node_rank

    def get_experiment_name(self) -> str:
        """``RunConfig.name``."""
        return self._name

    def get_trial_name(self) -> str:
        """The run's name (Ray Tune's trial name; one trial here)."""
        return self._name

    def get_trial_dir(self) -> str:
        """The run directory, ``<storage_path>/<name>``."""
        return self._run_dir

    def get_metadata(self) -> dict[str, Any]:
        """The trainer's metadata: always empty here."""
        return {}


class Session:
    """One worker's state: its context, the job's storage, and how many reports it made."""

    def __init__(self, spec: dict[str, Any], env: dict[str, str]) -> None:
        self.spec = spec
        self.context = TrainContext(spec, env)
        self.run_dir = spec["run_dir"]
        self.attempt = int(env.get("DTRAIN_RESTART_COUNT", 0))
        self.reports = 0
        self._state: dict[str, Any] | None = None  # rank 0's copy, the only writer

    def report(self, metrics: dict[str, Any], checkpoint: Checkpoint | None = None) -> None:
        """``dtrain.train.report`` for this worker (see there)."""
        if not isinstance(metrics, dict):
            raise TypeError(f"report(metrics={metrics!r}): pass a dict of metrics")
        check_json(metrics, "report(metrics)")
        if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
            raise TypeError(
                f"report(checkpoint={checkpoint!r}): pass a dtrain.train.Checkpoint, e.g. "
                "Checkpoint.from_directory(path)"
            )
        rank = self.context.get_world_rank()
        staged = storage.staging_dir(self.run_dir, self.spec["run_id"], self.attempt, self.reports)
        if checkpoint is not None:  # each rank into its own folder: rank 0 merges them
            shutil.copytree(checkpoint.path, os.path.join(staged, f"rank_{rank}"))
        _barrier()
        if rank == 0:
            if self._state is None:  # this attempt's first report: drop older attempts' leftovers
                self._state = storage.read_state(self.run_dir)
                prefix = storage.staging_prefix(self.spec["run_id"], self.attempt)
                storage.clear_staging(self.run_dir, keep_prefix=prefix)
            name = None
            if os.path.isdir(staged):
                name = storage.commit(
                    self.run_dir, self._state, staged, metrics, self.spec["checkpoint_config"]
                )
            storage.append_progress(
                self.run_dir,
                {
                    "run_id": self.spec["run_id"],
                    "attempt": self.attempt,
                    "report": self.reports,
                    "time": time.time(),
                    "metrics": metrics,
                    "checkpoint": name,
                },
            )
        _barrier()  # the checkpoint is persisted when report returns, on every rank
        self.reports += 1

    def get_checkpoint(self) -> Checkpoint | None:
        """``dtrain.train.get_checkpoint`` for this worker (see there)."""
        latest = storage.read_state(self.run_dir)["latest"]
        return Checkpoint(os.path.join(self.run_dir, latest)) if latest else None


def _barrier() -> None:
    import dtrain.parallel as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


_session: Session | None = None
#: True while a worker imports the user's module: a fit() then means a missing __main__ guard.
importing_user_code = False


def begin(spec: dict[str, Any], env: dict[str, str] | None = None) -> Session:
    """Start this process's session (the worker entry does, before the user's function)."""
    global _session
    _session = Session(spec, dict(os.environ if env is None else env))
    return _session


def end() -> None:
    """End this process's session (the worker entry does, after the user's function)."""
    global _session
    _session = None


def current(name: str) -> Session:
    """This process's session; a RuntimeError naming ``name()`` outside a training function."""
    if _session is None:
        raise RuntimeError(_OUTSIDE.format(name=name))
    return _session


def in_worker() -> bool:
    """True inside a worker process (where ``TorchTrainer.fit()`` must not be called)."""
    return _session is not None or importing_user_code


def report(metrics: dict[str, Any], checkpoint: Checkpoint | None = None) -> None:
    """Report ``metrics`` (JSON: str keys, numbers, str, bool, lists, None), and a checkpoint.

    Collective: every worker must call ``report`` the same number of times (it is a barrier,
    as in Ray Train). Rank 0's metrics are the ones kept (``Result.metrics``, progress.jsonl,
    the checkpoint's metrics; Ray Train 2's rule). When any worker passes a checkpoint, the
    files of every worker that passed one are copied into one new ``checkpoint_<n>`` folder
    of the run directory (same-named files: the lowest rank's wins), before ``report``
    returns.

    Raises:
        TypeError: metrics that are not JSON (names the key), or not a Checkpoint.
        ValueError: (rank 0, with a checkpoint) ``checkpoint_score_attribute``'s value is
            not a number.
        RuntimeError: called outside a training function.
    """
    current("report").report(metrics, checkpoint)


def get_context() -> TrainContext:
    """This worker's ``TrainContext`` (ranks, sizes, the experiment's name)."""
    return current("get_context").context


def get_checkpoint() -> Checkpoint | None:
    """The latest persisted checkpoint of the run: after a restart (or in a run whose
    directory already had checkpoints), the one to resume from; None in a fresh run."""
    return current("get_checkpoint").get_checkpoint()
