"""``Secret``: a string that never shows its value, compared in constant time."""

from __future__ import annotations

import hmac
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Secret:
    """A secret string that never shows its value in ``repr``, ``str`` or f-strings."""

    _value: str

    def reveal(self) -> str:
        """The secret itself: call this only where the value is sent or compared."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant time, because tokens are compared with what a client sent.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)
