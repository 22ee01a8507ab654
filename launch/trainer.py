"""``TorchTrainer``: Ray Train's trainer, run by ``dtrain launch``.

``TorchTrainer(...)`` checks that the training function can be imported by name and the
config is JSON (nothing is pickled). ``fit()`` writes the run's spec into
``<storage_path>/<name>`` and runs ``dtrain launch`` (``launcher.main``, in this process; the
environment variables Ray's driver sets are restored afterwards) with ``num_workers`` ranks,
each a fresh ``python -m dtrain.launch.trainer_worker`` process. The ranks report through the
run directory (``trainer_storage``), which ``fit()`` reads into a ``Result`` at the end. A
failed run raises ``TrainingFailedError`` with the launcher's summary of the rank that failed
first.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import re
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from dtrain.launch import trainer_session
from dtrain.launch import trainer_storage as storage
from dtrain.launch.trainer_checkpoint import Checkpoint
from dtrain.launch.trainer_config import (
    RunConfig,
    ScalingConfig,
    TorchConfig,
    check_config,
    launcher_flags,
)
from dtrain.launch.trainer_refs import check_json, function_ref

_FAILED = re.compile(r"^dtrain launch: rank (\d+) failed first")
_KEPT_LINES = 2000  # the launcher's lines that fit() keeps to find its last message


class TrainingFailedError(RuntimeError):
    """``fit()``'s error when the job failed (after its restarts, if any were allowed).

    Attributes:
        rank: the rank that failed first on the last attempt (None if no rank failed, e.g. a
            timeout or a lost cluster).
        exit_code: ``dtrain launch``'s exit code.
        summary: the launcher's failure summary (rank, node, exit code, end of traceback).
        result: the run's ``Result`` so far (checkpoints persisted before the failure).
    """

    def __init__(self, message: str, rank: int | None, exit_code: int, summary: str) -> None:
        super().__init__(message)
        self.rank = rank
        self.exit_code = exit_code
        self.summary = summary
        self.result: Result | None = None

    def __reduce__(self) -> tuple:
        return (type(self), (self.args[0], self.rank, self.exit_code, self.summary))


@dataclass
class Result:
    """What ``fit()`` returns, as Ray Train's ``Result``.

    Attributes:
        metrics: rank 0's last reported metrics (None when nothing was reported).
        checkpoint: the latest persisted checkpoint, or None.
        path: the run directory, ``<storage_path>/<name>``.
        error: None after ``fit()`` returned; the ``TrainingFailedError`` on a failed run's
            result (``error.result``).
        best_checkpoints: ``(checkpoint, metrics)`` for every kept checkpoint, oldest first
            (Ray: sorted by score). Non-finite metrics read back as None (strict JSON).
    """

    metrics: dict[str, Any] | None
    checkpoint: Checkpoint | None
    path: str
    error: TrainingFailedError | None = None
    best_checkpoints: list[tuple[Checkpoint, dict[str, Any]]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def metrics_dataframe(self) -> Any:
        """Every report's metrics, one row each, as a pandas DataFrame (None without pandas)."""
        try:
            import pandas as pd
        except ImportError:
            return None
        return pd.DataFrame([line["metrics"] for line in self.reports])

    def get_best_checkpoint(self, metric: str, mode: str) -> Checkpoint | None:
        """The kept checkpoint whose ``metric`` (``"a/b"`` also finds ``{"a": {"b": ..}}``)
        is the largest (``mode="max"``) or smallest (``"min"``), as Ray's; checkpoints
        without a numeric value for it (NaN is stored as None) are left out.

        Raises:
            RuntimeError: no checkpoint was kept, or none has a value for ``metric``.
            ValueError: ``mode`` is not "max" or "min".
        """
        if not self.best_checkpoints:
            raise RuntimeError(
                f"Result.get_best_checkpoint: the run {self.path} kept no checkpoint"
            )
        if mode not in ("max", "min"):
            raise ValueError(f"Result.get_best_checkpoint(mode={mode!r}): use 'max' or 'min'")
        valid = []
        for checkpoint, metrics in self.best_checkpoints:
            found, value = storage._lookup(metrics, metric)
            if found and isinstance(value, (int, float)) and not math.isnan(value):
                valid.append((value, checkpoint))
        if not valid:
            names = sorted({key for _, metrics in self.best_checkpoints for key in metrics})
            raise RuntimeError(
                f"Result.get_best_checkpoint(metric={metric!r}): no kept checkpoint has a "
                f"number for it; the metrics are {names}"
            )
        pick = max if mode == "max" else min
        return pick(valid, key=lambda pair: pair[0])[1]

    @classmethod
    def from_path(cls, path: str | os.PathLike, run_id: str | None = None) -> Result:
        """The result recorded in a run directory (of one ``fit()`` call when ``run_id``)."""
        path = os.path.abspath(os.fspath(path))
        state = storage.read_state(path)
        reports = storage.read_progress(path, run_id)
        best = [
            (Checkpoint(os.path.join(path, entry["dir"])), entry["metrics"])
            for entry in state["checkpoints"]
        ]
        latest = state["latest"]
        return cls(
            metrics=reports[-1]["metrics"] if reports else None,
            checkpoint=Checkpoint(os.path.join(path, latest)) if latest else None,
            path=path,
            best_checkpoints=best,
            reports=reports,
        )


class TorchTrainer:
    """Runs ``train_loop_per_worker(config)`` on ``scaling_config.num_workers`` workers.

    Args:
        train_loop_per_worker: a module-level function of an importable module, or of the
            script that calls ``fit()`` (which then needs ``if __name__ == "__main__":``),
            taking the config or nothing. Workers import it by name; it is never pickled.
        train_loop_config: its argument: JSON (dicts with str keys, lists, str, numbers,
            bool, None).
        torch_config: the process group's backend and timeout.
        scaling_config: workers and their resources.
        run_config: name, storage path, failure and checkpoint configs.
        address: dtrain's: the Ray cluster, as ``dtrain launch --address`` (default:
            ``RAY_ADDRESS``, a running ``ray start`` cluster, else an embedded one;
            ``"local"`` always starts an embedded one).

    Raises:
        TypeError: a lambda or closure, a config that is not JSON (naming the key), Ray Data
            datasets, or a config object of the wrong class.
        ValueError: a function that workers could not import, or a script without the
            ``__main__`` guard.
    """

    def __init__(
        self,
        train_loop_per_worker: Callable,
        *,
        train_loop_config: dict[str, Any] | None = None,
        torch_config: TorchConfig | None = None,
        scaling_config: ScalingConfig | None = None,
        run_config: RunConfig | None = None,
        datasets: dict[str, Any] | None = None,
        resume_from_checkpoint: Checkpoint | None = None,
        address: str | None = None,
    ) -> None:
        if datasets:
            raise TypeError(
                "TorchTrainer(datasets=...): Ray Data is not supported; build a "
                "dtrain.utils.data.DataLoader inside the training function and pass it to "
                "dtrain.train.torch.prepare_data_loader"
            )
        if resume_from_checkpoint is not None:
            raise TypeError(
                "TorchTrainer(resume_from_checkpoint=...): not supported (Ray Train 2 removed "
                "it too); run again with the same RunConfig(name, storage_path) to resume from "
                "the run's latest checkpoint"
            )
        self.function = function_ref(train_loop_per_worker)
        parameters = inspect.signature(train_loop_per_worker).parameters
        if len(parameters) > 1:
            raise ValueError(
                f"train_loop_per_worker={train_loop_per_worker.__qualname__} takes "
                f"{len(parameters)} arguments; it must take the config or nothing"
            )
        self.takes_config = len(parameters) == 1
        if train_loop_config is not None:
            check_json(train_loop_config, "train_loop_config")
        self.train_loop_config = train_loop_config
        self.torch_config = check_config(torch_config, TorchConfig, "torch_config")
        self.scaling_config = check_config(scaling_config, ScalingConfig, "scaling_config")
        self.run_config = check_config(run_config, RunConfig, "run_config")
        self.address = address

    def fit(self) -> Result:
        """Run the job; returns its ``Result``.

        Raises:
            TrainingFailedError: a worker failed (after ``max_failures`` restarts), naming
                the rank that failed first; ``error.result`` holds what was persisted.
                Also when the launcher itself could not run the job (no connection to the
                cluster, a placement failure): then ``error.rank`` is None and the message
                says "could not run the job".
            ValueError: the cluster cannot hold the job (e.g. GPUs it lacks).
            RuntimeError: called inside a worker (for a script: the ``__main__`` guard).
        """
        if trainer_session.importing_user_code:
            raise RuntimeError(
                "TorchTrainer.fit() ran while a worker imported the script to find the "
                "training function: move the code that calls fit() under "
                '`if __name__ == "__main__":`'
            )
        if trainer_session.in_worker():
            raise RuntimeError("TorchTrainer.fit() cannot be called inside a training function")
        run_dir = self.run_config.run_dir()
        os.makedirs(run_dir, exist_ok=True)
        storage.clear_staging(run_dir)
        run_id = uuid.uuid4().hex
        spec_path = os.path.join(run_dir, storage.SPEC)
        storage.write_json(
            spec_path,
            {
                "name": os.path.basename(run_dir),
                "run_dir": run_dir,
                "run_id": run_id,
                "function": self.function,
                "takes_config": self.takes_config,
                "config": self.train_loop_config if self.train_loop_config is not None else {},
                "checkpoint_config": vars(self.run_config.checkpoint_config),
                "timeout_s": self.torch_config.timeout_s,
            },
        )
        argv = [
            *launcher_flags(self.scaling_config, self.run_config, self.torch_config, self.address),
            "--log-dir",
            os.path.join(run_dir, storage.LOGS),
            "-m",
            "dtrain.launch.trainer_worker",
            spec_path,
        ]
        try:
            code, said = _launch(argv)
        finally:
            storage.clear_staging(run_dir)
        result = Result.from_path(run_dir, run_id)
        if code == 0:
            return result
        if code == 130:
            raise KeyboardInterrupt
        usage = [i for i, line in enumerate(said) if line.startswith("dtrain launch: error: ")]
        if code == 2 and usage:  # what only the cluster could tell, e.g. GPUs it lacks
            raise ValueError(
                "\n".join(_block(said, usage[-1])).removeprefix("dtrain launch: error: ")
            )
        error = _failure(said, code)
        error.result = result
        result.error = error
        raise error


class _Tee:
    """Passes text through to ``stream`` and keeps the launcher's own lines (not ranks'), the
    last ``_KEPT_LINES`` of them. Thread-safe: each thread's partial line is kept apart, so
    one thread's line never glues onto another's (``print`` writes the newline separately)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._pending: dict[int, str] = {}
        self._lines: deque[str] = deque(maxlen=_KEPT_LINES)

    @property
    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def write(self, text: str) -> int:
        thread = threading.get_ident()
        with self._lock:
            self._stream.write(text)
            *lines, rest = (self._pending.pop(thread, "") + text).split("\n")
            if rest:
                self._pending[thread] = rest
            self._lines.extend(line for line in lines if not line.startswith("[rank "))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", "utf-8")


def _launch(argv: list[str]) -> tuple[int, list[str]]:
    """``dtrain launch argv``; its exit code and what it said on stderr (ranks' lines left out).

    The environment is restored afterwards: ``ray.init`` sets driver variables (e.g.
    ``PYTHONBREAKPOINT`` to Ray's debugger) that ``ray.shutdown`` leaves behind.
    """
    from dtrain.launch.launcher import main

    saved = dict(os.environ)
    tee = _Tee(sys.stderr)
    try:
        with contextlib.redirect_stderr(tee):  # type: ignore[type-var]
            code = main(argv)
    finally:
        _restore_environ(saved)
    return code, tee.lines


def _restore_environ(saved: dict[str, str]) -> None:
    """Make ``os.environ`` equal ``saved`` again, touching only the variables that changed."""
    for name in set(os.environ) - set(saved):
        del os.environ[name]
    for name, value in saved.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _block(said: list[str], first: int) -> list[str]:
    """Line ``first`` and the indented lines that follow it (one launcher message)."""
    block = [said[first]]
    for line in said[first + 1 :]:
        if not line.startswith("  "):
            break
        block.append(line)
    return block


def _failure(said: list[str], code: int) -> TrainingFailedError:
    """The error for a failed job, from the launcher's last failure summary."""
    starts = [i for i, line in enumerate(said) if _FAILED.match(line)]
    errors = [i for i, line in enumerate(said) if line.startswith("dtrain launch: error: ")]
    if not starts and errors:  # the launcher's own error: no connection, a placement failure
        summary = "\n".join(_block(said, errors[-1]))
        return TrainingFailedError(
            f"dtrain launch could not run the job (exit {code}): "
            f"{summary.removeprefix('dtrain launch: error: ')}",
            None,
            code,
            summary,
        )
    if not starts:
        tail = "\n".join(said[-5:])
        return TrainingFailedError(
            f"training failed: dtrain launch exited {code}\n{tail}", None, code, tail
        )
    first = starts[-1]
    summary = "\n".join(_block(said, first))
    rank = int(_FAILED.match(said[first]).group(1))  # type: ignore[union-attr]
    gave_up = [line for line in said[first:] if "giving up after" in line]
    note = f" ({gave_up[0].removeprefix('dtrain launch: ')})" if gave_up else ""
    return TrainingFailedError(
        f"training failed: rank {rank} failed first{note}\n{summary}", rank, code, summary
    )
