"""``dtrain.train``'s configuration classes, with Ray Train's names and defaults:
``ScalingConfig``, ``RunConfig``, ``FailureConfig``, ``CheckpointConfig`` and ``TorchConfig``.

Each maps onto ``dtrain launch`` flags (``launcher_flags``): workers become ranks placed
``workers_per_node`` to a node bundle, ``resources_per_worker["CPU"]`` is ``--cpus-per-proc``,
``use_gpu`` is ``--gpus-per-node``, ``max_failures`` is ``--max-restarts``.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any

_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
_BACKENDS = {None: "auto", "gloo": "tcp", "tcp": "tcp", "nccl": "nccl"}


@dataclass
class ScalingConfig:
    """How many workers (ranks) and what each one gets, as Ray Train's ``ScalingConfig``.

    Args:
        num_workers: ranks in the job.
        use_gpu: one GPU per rank (``dtrain launch --gpus-per-node``).
        resources_per_worker: ``{"CPU": c, "GPU": g}``; CPU is ``--cpus-per-proc`` (default
            1), GPU may be 0 or 1 (1 is ``use_gpu``). Other resources are refused.
        placement_strategy: accepted for Ray's sake; ``"STRICT_PACK"`` puts every worker on
            one node, the others place ``workers_per_node`` ranks on each distinct node.
        workers_per_node: dtrain's: ranks per node (default 1: each rank its own node, which
            the embedded cluster simulates on one machine). ``num_workers`` must be a multiple.
    """

    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = None
    placement_strategy: str = "PACK"
    workers_per_node: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int):
            raise TypeError(
                f"ScalingConfig(num_workers={self.num_workers!r}): give an int; dtrain is not "
                "elastic, so a (min, max) range is not supported"
            )
        if self.num_workers < 1:
            raise ValueError(f"ScalingConfig(num_workers={self.num_workers}): use 1 or more")
        if self.placement_strategy not in _STRATEGIES:
            raise ValueError(
                f"ScalingConfig(placement_strategy={self.placement_strategy!r}): use one of "
                f"{', '.join(_STRATEGIES)}"
            )
        extra = set(self.resources_per_worker or {}) - {"CPU", "GPU"}
        if extra:
            raise ValueError(
                f"ScalingConfig(resources_per_worker=...): {sorted(extra)} not supported; "
                "dtrain launch reserves only CPU and GPU per rank"
            )
        gpus = (self.resources_per_worker or {}).get("GPU", 0)
        if gpus not in (0, 1):
            raise ValueError(
                f"ScalingConfig(resources_per_worker={{'GPU': {gpus}}}): each rank trains on "
                "exactly one GPU (or none); use 1 (or use_gpu=True)"
            )
        if not self.cpus_per_worker > 0:
            raise ValueError(
                f"ScalingConfig(resources_per_worker={{'CPU': {self.cpus_per_worker}}}): "
                "must be more than 0"
            )
        per_node = self.per_node
        if per_node < 1 or self.num_workers % per_node:
            raise ValueError(
                f"ScalingConfig(num_workers={self.num_workers}, workers_per_node={per_node}): "
                "num_workers must be a multiple of workers_per_node (1 or more)"
            )

    @property
    def gpus_per_worker(self) -> int:
        return 1 if self.use_gpu or (self.resources_per_worker or {}).get("GPU", 0) else 0

    @property
    def cpus_per_worker(self) -> float:
        return float((self.resources_per_worker or {}).get("CPU", 1))

    @property
    def per_node(self) -> int:
        if self.placement_strategy == "STRICT_PACK":
            return self.num_workers
        return self.workers_per_node or 1


@dataclass
class FailureConfig:
    """``max_failures``: restart every worker after a failure up to this many times
    (``dtrain launch --max-restarts``); each restart resumes from ``get_checkpoint()``."""

    max_failures: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.max_failures, bool) or not isinstance(self.max_failures, int):
            raise TypeError(f"FailureConfig(max_failures={self.max_failures!r}): give an int")
        if self.max_failures < 0:
            raise ValueError(
                f"FailureConfig(max_failures={self.max_failures}): retrying forever (-1) is not "
                "supported; give the number of restarts to allow (0 or more)"
            )


@dataclass
class CheckpointConfig:
    """Which persisted checkpoints to keep: the ``num_to_keep`` best by
    ``checkpoint_score_attribute`` (``checkpoint_score_order`` "max" or "min"), or the most
    recent ones without an attribute; None keeps all. The latest is always kept."""

    num_to_keep: int | None = None
    checkpoint_score_attribute: str | None = None
    checkpoint_score_order: str = "max"

    def __post_init__(self) -> None:
        if self.num_to_keep is not None and (
            isinstance(self.num_to_keep, bool)
            or not isinstance(self.num_to_keep, int)
            or self.num_to_keep < 1
        ):
            raise ValueError(
                f"CheckpointConfig(num_to_keep={self.num_to_keep!r}): use a positive int, or "
                "None to keep every checkpoint"
            )
        if self.checkpoint_score_order not in ("max", "min"):
            raise ValueError(
                f"CheckpointConfig(checkpoint_score_order={self.checkpoint_score_order!r}): "
                "use 'max' or 'min'"
            )


@dataclass
class RunConfig:
    """Where the run keeps its checkpoints and results: ``<storage_path>/<name>``.

    ``storage_path`` (default ``~/dtrain_results``) is a local or shared directory: every
    node of the job must see it at the same path. A ``name`` whose directory already holds
    checkpoints resumes from them, as in Ray Train 2.
    """

    name: str | None = None
    storage_path: str | None = None
    failure_config: FailureConfig = field(default_factory=FailureConfig)
    checkpoint_config: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        self.failure_config = check_config(self.failure_config, FailureConfig, "failure_config")
        self.checkpoint_config = check_config(
            self.checkpoint_config, CheckpointConfig, "checkpoint_config"
        )
        if self.storage_path is not None and "://" in str(self.storage_path):
            raise ValueError(
                f"RunConfig(storage_path={self.storage_path!r}): only file system paths are "
                "supported (a shared file system on a cluster); no cloud storage URIs"
            )
        if self.name is not None:
            if not isinstance(self.name, str):
                raise TypeError(
                    f"RunConfig(name={self.name!r}): give a str (the run directory's name, a "
                    "single path component); put the parent folder in storage_path"
                )
            separators = {os.sep, os.altsep or os.sep, "/"}
            if self.name in ("", ".", "..") or any(sep in self.name for sep in separators):
                raise ValueError(
                    f"RunConfig(name={self.name!r}): use a single path component (not empty, "
                    "'.' or '..', and without '/'); put the parent folder in storage_path"
                )

    def run_dir(self) -> str:
        """``<storage_path>/<name>``, absolute; a name from the time when none was given."""
        root = os.path.expanduser(str(self.storage_path or "~/dtrain_results"))
        name = self.name or datetime.datetime.now().strftime("dtrain_train_run-%Y-%m-%d_%H-%M-%S")
        return os.path.abspath(os.path.join(root, name))


@dataclass
class TorchConfig:
    """The process group every worker joins before the training function runs.

    Args:
        backend: ``"nccl"``, ``"gloo"`` (dtrain's tcp) or ``"tcp"``; None picks nccl for GPU
            workers and tcp otherwise.
        timeout_s: the collectives' timeout; None keeps dtrain's default.
    """

    backend: str | None = None
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.backend not in _BACKENDS:
            raise ValueError(
                f"TorchConfig(backend={self.backend!r}): use 'nccl', 'gloo', 'tcp' or None"
            )

    @property
    def launcher_backend(self) -> str:
        return _BACKENDS[self.backend]


def launcher_flags(
    scaling: ScalingConfig, run: RunConfig, torch_config: TorchConfig, address: str | None
) -> list[str]:
    """The ``dtrain launch`` flags that run ``scaling.num_workers`` ranks as configured."""
    per_node = scaling.per_node
    flags = ["--nodes", str(scaling.num_workers // per_node)]
    if scaling.gpus_per_worker:
        flags += ["--gpus-per-node", str(per_node)]
    else:
        flags += ["--procs-per-node", str(per_node)]
    flags += ["--cpus-per-proc", f"{scaling.cpus_per_worker:g}"]
    flags += ["--max-restarts", str(run.failure_config.max_failures)]
    flags += ["--backend", torch_config.launcher_backend]
    if address:
        flags += ["--address", address]
    return flags


def check_config(value: Any, kind: type, what: str) -> Any:
    """``value`` when it is a ``kind`` (a default one for None); else a TypeError."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise TypeError(
            f"{what}={type(value).__name__}: pass a dtrain.train.{kind.__name__} (Ray's own "
            "config classes are not accepted: import them from dtrain.train)"
        )
    return value
