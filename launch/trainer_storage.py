"""The run directory ``<storage_path>/<name>`` of a ``TorchTrainer`` run, and the
checkpoint bookkeeping that rank 0 does in it. Everything is strict JSON (a non-finite float
is written as null, as Ray Train 2's checkpoint state), and every file that is read back is
written whole and renamed into place, so a crash never leaves half of one.

::

    checkpoint_000000/ ...        persisted checkpoints (every reporting rank's files, merged)
    checkpoints.json              the kept checkpoints with their metrics, and the latest
    progress.jsonl                one line per report: rank 0's metrics (the driver reads it)
    logs/rank_N.log               each rank's output
    .dtrain_train/spec.json       what the workers run (written by fit())
    .dtrain_train/staging/...     checkpoints being copied in, one folder per rank (merged by
                                  rank 0 and renamed when complete)
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from typing import Any

SPEC = os.path.join(".dtrain_train", "spec.json")
STAGING = os.path.join(".dtrain_train", "staging")
STATE = "checkpoints.json"
PROGRESS = "progress.jsonl"
LOGS = "logs"
_RANK_DIR = re.compile(r"^rank_(\d+)$")
_CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")


def strict(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, list):
        return [strict(item) for item in value]
    return value


def write_json(path: str, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    partial = f"{path}.partial-{os.getpid()}"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(strict(value), handle, allow_nan=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def read_state(run_dir: str) -> dict[str, Any]:
    """The run's checkpoint state; an empty one for a new run."""
    try:
        with open(os.path.join(run_dir, STATE), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {"next_index": 0, "checkpoints": [], "latest": None}


def staging_prefix(run_id: str, attempt: int) -> str:
    """How the names of an attempt's staging folders begin."""
    return f"{run_id}-attempt{attempt}-"


def staging_dir(run_dir: str, run_id: str, attempt: int, report: int) -> str:
    """The folder for the ``report``-th report of an attempt; rank r copies into ``rank_<r>``."""
    return os.path.join(run_dir, STAGING, f"{staging_prefix(run_id, attempt)}report{report}")


def merge_staged(staged: str) -> str | None:
    """Merge the ranks' folders under ``staged`` into ``staged/merged`` (rank 0, after every
    rank copied); same-named files: the lowest rank's wins. Returns None when no rank copied.

    Files are moved, not copied (one file system), so this is cheap and a file is never
    written by two ranks at once.
    """
    ranks = []
    if os.path.isdir(staged):
        for entry in os.listdir(staged):
            match = _RANK_DIR.match(entry)
            if match and os.path.isdir(os.path.join(staged, entry)):
                ranks.append((int(match.group(1)), os.path.join(staged, entry)))
    if not ranks:
        return None
    merged = os.path.join(staged, "merged")
    if os.path.exists(merged):  # left by a merge that crashed: start again
        shutil.rmtree(merged)
    for _, source in sorted(ranks):
        for folder, _, files in os.walk(source):
            target = os.path.join(merged, os.path.relpath(folder, source))
            os.makedirs(target, exist_ok=True)
            for name in files:
                if not os.path.lexists(os.path.join(target, name)):
                    os.rename(os.path.join(folder, name), os.path.join(target, name))
    return merged


def commit(
    run_dir: str, state: dict[str, Any], staged: str, metrics: dict, keep: dict[str, Any]
) -> str:
    """Rename the merged files to the next ``checkpoint_<n>``, record it, prune; (rank 0).

    ``keep`` holds CheckpointConfig's fields. The state is written before pruned directories
    are deleted, so it never names a deleted checkpoint; folders that an earlier crash left
    half-deleted (or renamed but not recorded) are removed too. Returns the checkpoint's name.

    Raises:
        ValueError: the score attribute's value is not a number (nothing is renamed).
    """
    _score(metrics, keep)  # refuse a non-numeric score before anything changes
    merged = merge_staged(staged)
    if merged is None:
        raise ValueError(f"commit: no rank copied a checkpoint into {staged}")
    name = f"checkpoint_{state['next_index']:06d}"
    target = os.path.join(run_dir, name)
    if os.path.exists(target):  # renamed by a run that crashed before it recorded it
        shutil.rmtree(target)
    os.rename(merged, target)
    shutil.rmtree(staged, ignore_errors=True)
    state["next_index"] += 1
    state["checkpoints"].append({"dir": name, "metrics": strict(metrics)})
    state["latest"] = name
    state["checkpoints"] = _kept(state["checkpoints"], keep)
    write_json(os.path.join(run_dir, STATE), state)
    _remove_unrecorded(run_dir, state)
    return name


def _remove_unrecorded(run_dir: str, state: dict[str, Any]) -> None:
    """Delete ``checkpoint_<n>`` folders below ``next_index`` that the state does not list:
    those pruned just now, and those a crash left while pruning."""
    recorded = {entry["dir"] for entry in state["checkpoints"]}
    for entry in os.listdir(run_dir):
        match = _CHECKPOINT_DIR.match(entry)
        if match and int(match.group(1)) < state["next_index"] and entry not in recorded:
            shutil.rmtree(os.path.join(run_dir, entry), ignore_errors=True)


def _lookup(metrics: dict, attribute: str) -> tuple[bool, Any]:
    """``(found, value)`` of ``attribute`` in ``metrics``; ``"a/b"`` also finds
    ``{"a": {"b": ...}}`` (Ray's flattened keys)."""
    if attribute in metrics:
        return True, metrics[attribute]
    parts = attribute.split("/")
    for cut in range(len(parts) - 1, 0, -1):
        head = "/".join(parts[:cut])
        if isinstance(metrics.get(head), dict):
            found, value = _lookup(metrics[head], "/".join(parts[cut:]))
            if found:
                return found, value
    return False, None


def _score(metrics: dict, keep: dict[str, Any]) -> tuple[bool, float]:
    """Ray Train's ranking key: NaN (stored as null) < a missing attribute (-inf) < numbers;
    negated for ``"min"``.

    Raises:
        ValueError: the attribute's value is not a number, NaN or null.
    """
    attribute = keep.get("checkpoint_score_attribute")
    if attribute is None:
        return True, float("-inf")
    found, value = _lookup(metrics, attribute)
    if not found:
        return True, float("-inf")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False, float("-inf")
    if not isinstance(value, (int, float)):
        raise ValueError(
            f"CheckpointConfig(checkpoint_score_attribute={attribute!r}): the reported value "
            f"{value!r} ({type(value).__name__}) is not a number; report a number under "
            f"{attribute!r}, or choose another attribute"
        )
    sign = 1.0 if keep.get("checkpoint_score_order", "max") == "max" else -1.0
    return True, sign * float(value)


def _kept(checkpoints: list[dict], keep: dict[str, Any]) -> list[dict]:
    """Ray Train's rule: the ``num_to_keep`` best by the score attribute (the most recent
    without one, and among equal scores), and always the latest; in report order."""
    count = keep.get("num_to_keep")
    if count is None or len(checkpoints) <= count:
        return list(checkpoints)
    if keep.get("checkpoint_score_attribute") is None:
        best = set(range(len(checkpoints) - count, len(checkpoints)))
    else:
        ranked = sorted(
            range(len(checkpoints)), key=lambda i: (*_score(checkpoints[i]["metrics"], keep), i)
        )
        best = set(ranked[-count:])
    best.add(len(checkpoints) - 1)
    return [entry for i, entry in enumerate(checkpoints) if i in best]


def append_progress(run_dir: str, line: dict[str, Any]) -> None:
    """One report of rank 0, as a JSON line (appended, flushed); a line that a crash cut
    short is ended first, so that it does not swallow this one."""
    path = os.path.join(run_dir, PROGRESS)
    text = json.dumps(strict(line), allow_nan=False) + "\n"
    with open(path, "ab") as handle:
        if handle.tell() > 0:
            with open(path, "rb") as reader:
                reader.seek(-1, os.SEEK_END)
                if reader.read(1) != b"\n":
                    text = "\n" + text
        handle.write(text.encode("utf-8"))
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


def clear_staging(run_dir: str, keep_prefix: str | None = None) -> None:
    """Remove what crashed runs or attempts left half-copied: all of it, or every folder
    whose name does not start with ``keep_prefix``."""
    root = os.path.join(run_dir, STAGING)
    if keep_prefix is None:
        shutil.rmtree(root, ignore_errors=True)
        return
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        return
    for entry in entries:
        if not entry.startswith(keep_prefix):
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
