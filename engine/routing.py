"""The routing snapshot: what call setup and the API's key checks need, in memory.

A frozen copy of the projects, their phone numbers (with the system that answers each)
and the hashes of the live API keys, as of one ``version`` of the database's
``routing_version`` row. The routing actor (actors/routing.py) loads it at start and
replaces it whole when the version moves; readers take the current one synchronously
and never see it change under them. So the voice webhook, the stream start and the
analytics key check make no database round trip, and keep working while PostgreSQL is
away (with the last snapshot loaded).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.projects import Project


class NumberRoute(msgspec.Struct, frozen=True):
    number: str
    project_id: str
    system: str  # "openai": answered here; "vapi": handed to Vapi (api/http/vapi_calls.py)
    on_call_number: str | None
    vapi_phone_number_id: str | None = None
    vapi_assistant_id: str | None = None


def hash_key(key: str) -> str:
    """What is stored of an API key: its SHA-256. The key is 30+ random bytes, so a fast
    hash is enough; the plain key is shown once and never kept."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    version: int  # routing_version.version when it was read; 0: nothing loaded yet
    numbers: Mapping[str, NumberRoute]
    projects: Mapping[str, Project]
    key_projects: Mapping[str, str]  # SHA-256 of a live key -> the project it reads

    @classmethod
    def of(
        cls,
        version: int,
        numbers: Mapping[str, NumberRoute],
        projects: Mapping[str, Project],
        key_projects: Mapping[str, str],
    ) -> RoutingSnapshot:
        """A snapshot whose mappings nobody can change (copies, behind read-only views)."""
        return cls(
            version,
            MappingProxyType(dict(numbers)),
            MappingProxyType(dict(projects)),
            MappingProxyType(dict(key_projects)),
        )

    def route(self, number: str) -> NumberRoute | None:
        return self.numbers.get(number)


EMPTY_SNAPSHOT = RoutingSnapshot.of(0, {}, {}, {})
