"""Per-key admission for the API's database reads: a concurrency limit and a token
bucket per key, so one tenant (or a leaked key) cannot take the read lane from the
others. Pure: the caller passes the Trio clock's time.

Only authenticated keys get here (unknown keys are turned away from the in-memory key
cache first), so the number of buckets is bounded by the number of real keys; the map
is capped all the same, forgetting idle keys first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_TRACKED_KEYS = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated_s: float
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # "concurrency" or "rate"
    retry_after_s: int  # for the Retry-After header: whole seconds, at least 1


class KeyLimits:
    def __init__(self, *, concurrency: int, rate_per_s: float, burst: int) -> None:
        if concurrency < 1 or rate_per_s <= 0 or burst < 1:
            raise ValueError("concurrency, rate_per_s and burst must be positive")
        self._concurrency = concurrency
        self._rate_per_s = rate_per_s
        self._burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def begin(self, key: str, now_s: float) -> Refused | None:
        """Admit one request for ``key`` (then call ``end``), or say why not."""
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room()
            bucket = self._buckets[key] = _Bucket(float(self._burst), now_s)
        bucket.tokens = min(
            float(self._burst), bucket.tokens + (now_s - bucket.updated_s) * self._rate_per_s
        )
        bucket.updated_s = now_s
        if bucket.in_flight >= self._concurrency:
            return Refused("concurrency", 1)
        if bucket.tokens < 1.0:
            wait_s = (1.0 - bucket.tokens) / self._rate_per_s
            return Refused("rate", max(1, math.ceil(wait_s)))
        bucket.tokens -= 1.0
        bucket.in_flight += 1
        return None

    def end(self, key: str) -> None:
        bucket = self._buckets.get(key)
        if bucket is not None and bucket.in_flight > 0:
            bucket.in_flight -= 1

    def _make_room(self) -> None:
        if len(self._buckets) < MAX_TRACKED_KEYS:
            return
        idle = [key for key, bucket in self._buckets.items() if bucket.in_flight == 0]
        for key in idle[: max(1, len(idle) // 2)]:  # the oldest half of the idle ones
            del self._buckets[key]
