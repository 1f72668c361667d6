"""A fixed-bucket histogram: cheap to observe on the per-frame path (one bisect, one
increment), mergeable, and rendered as Prometheus cumulative buckets. Pure."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# Seconds. Frame forwarding is sub-millisecond; turns and first audio are hundreds of ms.
FAST_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
SLOW_BUCKETS_S = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


@dataclass
class Histogram:
    bounds_s: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # one per bound, plus +Inf
    sum_s: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds_s) + 1)

    def observe(self, value_s: float) -> None:
        self.counts[bisect_left(self.bounds_s, value_s)] += 1
        self.sum_s += value_s
        self.count += 1

    def merge(self, other: Histogram) -> None:
        if other.bounds_s != self.bounds_s:
            raise ValueError("histograms with different buckets")
        for n, value in enumerate(other.counts):
            self.counts[n] += value
        self.sum_s += other.sum_s
        self.count += other.count

    def take(self) -> Histogram:
        """What was observed since the last take (and start again from zero)."""
        taken = Histogram(self.bounds_s, self.counts, self.sum_s, self.count)
        self.counts, self.sum_s, self.count = [0] * (len(self.bounds_s) + 1), 0.0, 0
        return taken

    def snapshot(self) -> HistogramSnapshot:
        """A frozen copy (what a ``statistics()`` hands out); this one goes on counting."""
        return HistogramSnapshot(self.bounds_s, tuple(self.counts), self.sum_s, self.count)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    bounds_s: tuple[float, ...]
    counts: tuple[int, ...]  # one per bound, plus +Inf
    sum_s: float
    count: int

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as Prometheus renders them, ending with ``+Inf``."""
        running, out = 0, []
        for bound, value in zip((*self.bounds_s, float("inf")), self.counts, strict=True):
            running += value
            out.append(("+Inf" if bound == float("inf") else f"{bound:g}", running))
        return out
