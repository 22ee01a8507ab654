"""The run directory ``<storage_path>/<name>`` of a ``TorchTrainer`` run, and the
checkpoint bookkeeping that rank 0 does in it. Everything is JSON, and every file that is
read back is written whole and renamed into place, so a crash never leaves half of one.

::

    checkpoint_000000/ ...        persisted checkpoints (every reporting rank's files, merged)
    checkpoints.json              the kept checkpoints with their metrics, and the latest
    progress.jsonl                one line per report: rank 0's metrics (the driver reads it)
    logs/rank_N.log               each rank's output
    .dtrain_train/spec.json       what the workers run (written by fit())
    .dtrain_train/staging/...     checkpoints being copied in (renamed when complete)
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

SPEC = os.path.join(".dtrain_train", "spec.json")
STAGING = os.path.join(".dtrain_train", "staging")
STATE = "checkpoints.json"
PROGRESS = "progress.jsonl"
LOGS = "logs"


def write_json(path: str, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.partial-{os.getpid()}"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(value, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def read_state(run_dir: str) -> dict[str, Any]:
    """The run's checkpoint state; an empty one for a new run."""
    try:
        with open(os.path.join(run_dir, STATE), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {"next_index": 0, "checkpoints": [], "latest": None}


def staging_dir(run_dir: str, run_id: str, attempt: int, report: int) -> str:
    """Where every rank copies its files for the ``report``-th report of an attempt."""
    return os.path.join(run_dir, STAGING, f"{run_id}-attempt{attempt}-report{report}")


def commit(
    run_dir: str, state: dict[str, Any], staged: str, metrics: dict, keep: dict[str, Any]
) -> str:
    """Rename the staged files to the next ``checkpoint_<n>``, record it, prune; (rank 0).

    ``keep`` holds CheckpointConfig's fields. The state is written before pruned directories
    are deleted, so it never names a deleted checkpoint. Returns the checkpoint's name.
    """
    name = f"checkpoint_{state['next_index']:06d}"
    target = os.path.join(run_dir, name)
    if os.path.exists(target):  # renamed by a run that crashed before it recorded it
        shutil.rmtree(target)
    os.rename(staged, target)
    state["next_index"] += 1
    state["checkpoints"].append({"dir": name, "metrics": metrics})
    state["latest"] = name
    kept = _kept(state["checkpoints"], keep)
    dropped = [entry["dir"] for entry in state["checkpoints"] if entry not in kept]
    state["checkpoints"] = kept
    write_json(os.path.join(run_dir, STATE), state)
    for old in dropped:
        shutil.rmtree(os.path.join(run_dir, old), ignore_errors=True)
    return name


def _kept(checkpoints: list[dict], keep: dict[str, Any]) -> list[dict]:
    """Ray Train's rule: the ``num_to_keep`` best by the score attribute (the most recent
    without one), and always the latest; in report order."""
    count = keep.get("num_to_keep")
    if count is None or len(checkpoints) <= count:
        return list(checkpoints)
    attribute = keep.get("checkpoint_score_attribute")
    if attribute is None:
        best = checkpoints[-count:]
    else:
        sign = 1.0 if keep.get("checkpoint_score_order", "max") == "max" else -1.0

        def score(entry: dict) -> float:
            value = entry["metrics"].get(attribute)
            return sign * value if isinstance(value, (int, float)) else float("-inf")

        ranked = sorted(range(len(checkpoints)), key=lambda i: (score(checkpoints[i]), i))
        best = [checkpoints[i] for i in sorted(ranked[-count:])]
    return [entry for entry in checkpoints if entry in best or entry is checkpoints[-1]]


def append_progress(run_dir: str, line: dict[str, Any]) -> None:
    """One report of rank 0, as a JSON line (appended, flushed)."""
    with open(os.path.join(run_dir, PROGRESS), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
        handle.flush()


def read_progress(run_dir: str, run_id: str | None = None) -> list[dict[str, Any]]:
    """The report lines, those of ``fit()`` call ``run_id`` only when given."""
    try:
        with open(os.path.join(run_dir, PROGRESS), encoding="utf-8") as handle:
            texts = handle.read().splitlines()
    except FileNotFoundError:
        return []
    lines = []
    for text in texts:
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return [line for line in lines if run_id is None or line.get("run_id") == run_id]


def clear_staging(run_dir: str) -> None:
    """Remove what a crashed run left half-copied."""
    shutil.rmtree(os.path.join(run_dir, STAGING), ignore_errors=True)
