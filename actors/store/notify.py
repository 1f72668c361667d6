"""PostgreSQL ``LISTEN`` from Trio: one dedicated connection outside the pool.

asyncpg calls a listener back on the asyncio side; trio-asyncio runs that loop in the
Trio thread, so the callback can hand the payload to a Trio memory channel with
``send_nowait``. The channel is small and a full one drops: a notification here only
says "something changed", and one pending wake-up is as good as many.
"""

from __future__ import annotations

import contextlib
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
import trio
from trio_asyncio import aio_as_trio

from actors.store.db import CONNECT_ERRORS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

LISTEN_CLOSE_TIMEOUT_S = 2.0
PENDING_NOTIFICATIONS = 4


class ListenFailed(Exception):
    """The listening connection could not be made (the database is away)."""


@asynccontextmanager
async def open_listener(
    dsn: str, channel: str, *, connect_timeout_s: float
) -> AsyncIterator[trio.MemoryReceiveChannel[str]]:
    """Payloads of ``NOTIFY channel``; the receive channel ends (``EndOfChannel``) when
    the connection is lost, so the listener knows to reconnect."""
    send, receive = trio.open_memory_channel[str](PENDING_NOTIFICATIONS)

    def notified(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
            send.send_nowait(payload)

    def lost(_connection: Any) -> None:
        send.close()

    try:
        with trio.fail_after(connect_timeout_s):
            connection = await aio_as_trio(asyncpg.connect)(dsn, timeout=connect_timeout_s)
    except CONNECT_ERRORS as exc:
        raise ListenFailed(str(exc) or type(exc).__name__) from exc
    try:
        connection.add_termination_listener(lost)
        with trio.fail_after(connect_timeout_s):
            await aio_as_trio(connection.add_listener)(channel, notified)
    except CONNECT_ERRORS as exc:
        connection.terminate()
        raise ListenFailed(str(exc) or type(exc).__name__) from exc
    try:
        with receive:
            yield receive
    finally:
        send.close()
        with trio.move_on_after(LISTEN_CLOSE_TIMEOUT_S) as scope:
            scope.shield = True
            with contextlib.suppress(*CONNECT_ERRORS):
                await aio_as_trio(connection.close)()
        if scope.cancelled_caught:
            connection.terminate()
