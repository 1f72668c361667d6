"""The stream token's single use, as this instance knows it.

PostgreSQL is where every instance agrees that a call's stream started once (the
``claim_stream`` query). This instance also remembers the CallSids whose streams it
started, so that the single use still holds here while the database is away or slow. An
entry is forgotten once its token can no longer be presented (tokens expire after
``TOKEN_LIFETIME_S``), which keeps the set as small as a minute of calls. Pure; times are
Trio clock seconds.
"""

from __future__ import annotations

from collections import OrderedDict

from engine.stream_tokens import TOKEN_LIFETIME_S

# The expiry is checked against wall clocks that may differ a little between instances.
CLAIM_MEMORY_S = TOKEN_LIFETIME_S + 30.0
MAX_CLAIMS = 100_000  # far above a minute of calls; a bound, not a working size


class LocalClaims:
    def __init__(self, memory_s: float = CLAIM_MEMORY_S, max_claims: int = MAX_CLAIMS) -> None:
        self._memory_s = memory_s
        self._max_claims = max_claims
        self._claimed_at_s: OrderedDict[str, float] = OrderedDict()  # oldest first

    def claim(self, call_sid: str, now_s: float) -> bool:
        """True the first time ``call_sid`` is claimed here (within the memory span)."""
        self._forget(now_s)
        if call_sid in self._claimed_at_s:
            return False
        self._claimed_at_s[call_sid] = now_s
        return True

    def __len__(self) -> int:
        return len(self._claimed_at_s)

    def _forget(self, now_s: float) -> None:
        claims = self._claimed_at_s
        while claims:
            oldest_sid, at_s = next(iter(claims.items()))
            if now_s - at_s < self._memory_s and len(claims) < self._max_claims:
                return
            del claims[oldest_sid]
