"""How many workers the backlog needs: ``streamapp_recommended_workers`` from the group's lag and
its measured drain rate, capped at the partition count, with hysteresis (the KEDA/HPA signal)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

__all__ = ["GroupSample", "WorkerRecommender"]


@dataclass(frozen=True)
class GroupSample:
    """One look at the whole consumer group, every partition of the topics it consumes."""

    at: float  #: monotonic seconds
    end: int  #: sum of the partitions' end offsets (what has arrived)
    done: int  #: sum of the group's committed offsets (what has been processed)
    members: int  #: workers in the group now

    @property
    def lag(self) -> int:
        return max(0, self.end - self.done)


@dataclass(eq=False)  # a stateful recommender: equal only to itself
class WorkerRecommender:
    """Turn group samples into a worker count.

    - arrival rate λ and drain rate μ: offsets per second over the last ``window_seconds``;
    - capacity per worker: μ / members, measured only while the group was saturated (a backlog
      waited through the whole window), averaged over such windows; without a measurement yet the
      recommendation holds at the current member count;
    - needed: enough workers to keep up with λ and clear the backlog within ``drain_seconds``,
      at ``utilization`` of their measured capacity: ceil((λ + lag / drain_seconds) / (c · u));
    - capped to 1 .. ``partitions`` (a worker beyond the partition count gets nothing to do);
    - hysteresis: a higher need is recommended at once; a lower one only after it stayed lower
      for ``scale_down_seconds`` (then the highest need seen in that time), so a backlog that
      comes and goes does not flap the worker count.
    """

    partitions: int
    drain_seconds: float = 60.0
    scale_down_seconds: float = 120.0
    window_seconds: float = 30.0
    utilization: float = 0.8
    saturation_seconds: float = 2.0
    samples: deque[GroupSample] = field(default_factory=deque, init=False)
    #: records per second one worker drains, when saturated
    capacity: float | None = field(default=None, init=False)
    recommended: int = field(default=1, init=False)
    _lower_since: float | None = field(default=None, init=False)
    _lower_peak: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError("partitions must be 1 or more")

    def observe(self, sample: GroupSample) -> int:
        """Take one sample; return the recommendation (also kept in :attr:`recommended`)."""
        self.samples.append(sample)
        while len(self.samples) > 2 and sample.at - self.samples[1].at >= self.window_seconds:
            self.samples.popleft()
        need = self._need()
        if need is None:
            return self.recommended
        return self._with_hysteresis(sample.at, need)

    def _need(self) -> int | None:
        first, last = self.samples[0], self.samples[-1]
        elapsed = last.at - first.at
        if elapsed <= 0:
            return None if self.capacity is None else self._workers_for(0.0, last.lag)
        arrival = max(0.0, (last.end - first.end) / elapsed)
        drained = max(0.0, (last.done - first.done) / elapsed)
        # saturated: at both ends of the window more work waited than the group drains in
        # saturation_seconds; only then does the drain rate show what the workers can do
        saturated = drained > 0 and min(first.lag, last.lag) > drained * self.saturation_seconds
        if saturated and last.members > 0:
            measured = drained / last.members
            self.capacity = measured if self.capacity is None else (self.capacity + measured) / 2
        if self.capacity is None:
            # nothing measured yet: no backlog needs one worker; a backlog keeps what runs
            return 1 if last.lag == 0 else max(1, min(last.members, self.partitions))
        return self._workers_for(arrival, last.lag)

    def _workers_for(self, arrival: float, lag: int) -> int:
        assert self.capacity is not None
        needed_rate = arrival + lag / self.drain_seconds
        workers = math.ceil(needed_rate / (self.capacity * self.utilization) - 1e-9)
        return max(1, min(self.partitions, workers))

    def _with_hysteresis(self, now: float, need: int) -> int:
        if need >= self.recommended:
            self.recommended = need
            self._lower_since = None
            return need
        if self._lower_since is None:
            self._lower_since, self._lower_peak = now, need
        self._lower_peak = max(self._lower_peak, need)
        if now - self._lower_since >= self.scale_down_seconds:
            self.recommended = self._lower_peak
            self._lower_since = None
        return self.recommended
