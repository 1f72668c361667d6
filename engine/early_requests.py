"""The early-sessions actor's protocol (actors/early_sessions.py), as its clients see it:
the requests it serves and the taker's side of ``TakeEarly``.

The voice webhook asks for a session as it answers (``OpenEarly``) and the status
callback drops one whose call ended first (``DiscardEarly``); the call actor takes the
open socket when its stream starts (``take_early``). Here, in the engine's layer, so
that the call actor and the early-sessions actor never import each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from engine.ws import WebSocket

if TYPE_CHECKING:
    from engine.mailbox import Outbox

REPLY_WAIT_S = 0.2  # the taker's wait for the actor to answer, beyond the handshake


@dataclass(frozen=True, slots=True)
class OpenEarly:
    call_sid: str
    # The project's own Realtime model (the session is opened for one model); None: the
    # endpoint's (OPENAI_REALTIME_MODEL).
    model: str | None = None


@dataclass(frozen=True, slots=True)
class TakeEarly:
    call_sid: str
    reply: trio.MemorySendChannel[WebSocket | None]


@dataclass(frozen=True, slots=True)
class DiscardEarly:
    call_sid: str


EarlyRequest = OpenEarly | TakeEarly | DiscardEarly


async def take_early(
    outbox: Outbox[EarlyRequest] | None, call_sid: str, *, connect_timeout_s: float
) -> WebSocket | None:
    """The session opened for ``call_sid`` at webhook time, or None (none was opened, it
    failed, or the actor is busy: the caller connects itself)."""
    if outbox is None:
        return None
    send, receive = trio.open_memory_channel[WebSocket | None](1)
    async with send, receive:
        if not outbox.send_nowait(TakeEarly(call_sid, send)):
            return None
        with trio.move_on_after(connect_timeout_s + REPLY_WAIT_S):
            return await receive.receive()
        try:  # answered just as the wait ended: the socket is ours to close
            late = receive.receive_nowait()
        except trio.WouldBlock:
            return None
        if late is not None:
            await late.aclose()
    return None
