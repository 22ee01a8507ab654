"""``DDPStats``: optional per-step timings of DDP's gradient all-reduce and how much of it
backward hid.

Off by default: ``DistributedDataParallel.stats`` is ``None`` and the reducer then only tests
that attribute. Set ``model.stats = DDPStats()`` to record, for every synchronised backward:

- ``backward_start`` — the gradient of the module's output arrived (backward of the module
  begins; the loss's own backward comes before it);
- ``compute_end`` — the autograd engine produced its last gradient (backward compute ends);
- ``end`` — every bucket is averaged (``backward()`` is about to return);
- per bucket, ``launch`` (its all-reduce was issued) and ``done`` (the group's ordered
  executor finished it: a timestamp job queued behind it on the same thread).

From these: ``allreduce_s`` is the length of the union of the buckets' [launch, done]
intervals (buckets run one after another, so overlapping spans are counted once);
``exposed_s`` is the part of that union after ``compute_end`` — communication nothing could
hide; ``hidden_s = allreduce_s - exposed_s`` ran while backward still computed. All times are
``time.perf_counter()`` seconds.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field


@dataclass
class BucketTiming:
    """One bucket's all-reduce in one step."""

    index: int
    nbytes: int
    launch: float
    done: float | None = None  # set on the group's executor thread once it finished

    @property
    def duration_s(self) -> float:
        """From launch to completion (includes queueing behind earlier buckets)."""
        return (self.done if self.done is not None else self.launch) - self.launch


@dataclass
class StepStats:
    """The timeline of one synchronised backward (see the module docstring)."""

    backward_start: float | None = None
    compute_end: float = 0.0
    end: float = 0.0
    buckets: list[BucketTiming] = field(default_factory=list)

    def _intervals(self) -> list[tuple[float, float]]:
        """The buckets' [launch, done] intervals, merged where they overlap."""
        spans = sorted((b.launch, b.done if b.done is not None else b.launch) for b in self.buckets)
        merged: list[list[float]] = []
        for start, stop in spans:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], stop)
            else:
                merged.append([start, stop])
        return [(a, b) for a, b in merged]

    @property
    def backward_compute_s(self) -> float:
        """From the output's gradient to the last parameter gradient."""
        start = self.backward_start
        if start is None:  # the output was not a tensor: start at the first launch
            start = min((b.launch for b in self.buckets), default=self.compute_end)
        return self.compute_end - start

    @property
    def allreduce_s(self) -> float:
        """Seconds during which at least one bucket's all-reduce was in flight."""
        return sum(b - a for a, b in self._intervals())

    @property
    def exposed_s(self) -> float:
        """All-reduce time after the last gradient was produced: what backward did not hide."""
        return sum(max(0.0, b - max(a, self.compute_end)) for a, b in self._intervals())

    @property
    def hidden_s(self) -> float:
        """All-reduce time that overlapped backward compute."""
        return self.allreduce_s - self.exposed_s

    @property
    def wait_s(self) -> float:
        """How long ``backward()`` waited after its last gradient (≈ ``exposed_s``)."""
        return self.end - self.compute_end


class DDPStats:
    """Collects a ``StepStats`` per synchronised backward of the DDP module it is set on."""

    def __init__(self) -> None:
        self.steps: list[StepStats] = []

    def clear(self) -> None:
        """Forget the steps recorded so far (e.g. after warm-up)."""
        self.steps.clear()

    # ---- called by DistributedDataParallel ---------------------------------------------
    def _begin(self, backward_start: float | None) -> StepStats:
        step = StepStats(backward_start=backward_start)
        self.steps.append(step)
        return step

    @staticmethod
    def _now() -> float:
        return time.perf_counter()

    # ---- reading ------------------------------------------------------------------------
    def summary(self) -> dict[str, float]:
        """Means over the recorded steps (seconds; means, so hidden + exposed = all-reduce
        holds here too), the median bucket count, and the hidden fraction
        ``1 - exposed / all-reduce``."""
        if not self.steps:
            raise ValueError("DDPStats.summary: no step recorded; run a backward first")
        allreduce = statistics.fmean(s.allreduce_s for s in self.steps)
        exposed = statistics.fmean(s.exposed_s for s in self.steps)
        return {
            "steps": len(self.steps),
            "buckets": statistics.median(len(s.buckets) for s in self.steps),
            "backward_compute_s": statistics.fmean(s.backward_compute_s for s in self.steps),
            "allreduce_s": allreduce,
            "exposed_s": exposed,
            "hidden_s": allreduce - exposed,
            "wait_s": statistics.fmean(s.wait_s for s in self.steps),
            "hidden_fraction": 1.0 - exposed / allreduce if allreduce > 0 else 0.0,
        }
