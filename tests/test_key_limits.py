"""Per-key limits and the per-instance stream claims: pure, with explicit times."""

from __future__ import annotations

import pytest

from engine.key_limits import KeyLimits, Refused
from engine.stream_claims import LocalClaims


def test_a_key_gets_its_burst_then_one_request_per_refill() -> None:
    limits = KeyLimits(concurrency=10, rate_per_s=2.0, burst=3)
    admitted = []
    for _ in range(4):
        admitted.append(limits.begin("k", 100.0) is None)
        limits.end("k")
    assert admitted == [True, True, True, False]
    assert limits.begin("k", 100.0) == Refused("rate", 1)
    assert limits.begin("k", 100.5) is None  # half a second at 2/s: one more token
    assert limits.begin("other", 100.5) is None  # keys do not share a bucket


def test_retry_after_says_how_long_until_a_token_in_whole_seconds() -> None:
    limits = KeyLimits(concurrency=10, rate_per_s=0.25, burst=1)
    assert limits.begin("k", 0.0) is None
    assert limits.begin("k", 0.0) == Refused("rate", 4)
    assert limits.begin("k", 3.5) == Refused("rate", 1)


def test_a_key_cannot_have_more_requests_in_flight_than_its_concurrency() -> None:
    limits = KeyLimits(concurrency=2, rate_per_s=100.0, burst=100)
    assert limits.begin("k", 0.0) is None
    assert limits.begin("k", 0.0) is None
    assert limits.begin("k", 0.0) == Refused("concurrency", 1)
    limits.end("k")
    assert limits.begin("k", 0.0) is None


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        KeyLimits(concurrency=0, rate_per_s=1.0, burst=1)


def test_a_stream_is_claimed_once_until_its_token_could_no_longer_be_presented() -> None:
    claims = LocalClaims(memory_s=90.0)
    assert claims.claim("CA1", 0.0)
    assert not claims.claim("CA1", 89.0)
    assert claims.claim("CA2", 89.0)
    assert claims.claim("CA1", 90.0)  # forgotten: its token has long expired
    assert len(claims) == 2


def test_the_claims_stay_bounded_whatever_the_rate() -> None:
    claims = LocalClaims(memory_s=90.0, max_claims=100)
    for n in range(1000):
        assert claims.claim(f"CA{n}", 1.0)
    assert len(claims) == 100
    assert not claims.claim("CA999", 1.0)  # the newest are the ones kept
