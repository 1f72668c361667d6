"""One live call: a pure conversation core (``core`` and the modules it composes) and
the actor that does its I/O (``actor``). See docs/architecture.md, "The call"."""

from actors.call.actor import STOP_BUDGET_S, CallActor
from actors.call.setup import CallEnded, CallSetup

__all__ = ["STOP_BUDGET_S", "CallActor", "CallEnded", "CallSetup"]
