"""PostgreSQL ``LISTEN`` from Trio: one dedicated connection outside the pool.

asyncpg calls a listener back on the asyncio side; trio-asyncio runs that loop in the
Trio thread, so the callback can hand the payload to a Trio memory channel with
``send_nowait``. The channel is small and a full one drops: a notification here only
says "something changed", and one pending wake-up is as good as many.

``Relay`` is how the store serves it: it holds the connection, reconnecting while the
database is away, and tells a subscriber (the routing actor's inbox) of each
notification, so no other actor opens a connection of its own.
"""

from __future__ import annotations

import contextlib
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import asyncpg
import trio
from trio_asyncio import aio_as_trio

from actors.store.db import CONNECT_ERRORS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

log = logging.getLogger("afterhours.store")

LISTEN_CLOSE_TIMEOUT_S = 2.0
PENDING_NOTIFICATIONS = 4
LISTEN_CONNECT_TIMEOUT_S = 5.0
LISTEN_RETRY_S = 1.0
LISTEN_RETRY_MAX_S = 10.0
# Notified by the routing tables' triggers on every change (migration 0005).
ROUTING_CHANNEL = "afterhours_routing"


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


class Relay:
    """One ``LISTEN channel`` held for a subscriber: ``notified()`` is called for every
    notification, and once after each (re)connection, for anything committed while
    nobody listened. Reconnects with a growing pause while the database is away.
    ``notified`` must not block (it is called from the listening task)."""

    def __init__(self, dsn: str, channel: str, notified: Callable[[], None]) -> None:
        self._dsn = dsn
        self._channel = channel
        self._notified = notified
        self.listening = False

    async def run(self) -> NoReturn:
        retry_s = LISTEN_RETRY_S
        while True:
            try:
                async with open_listener(
                    self._dsn, self._channel, connect_timeout_s=LISTEN_CONNECT_TIMEOUT_S
                ) as notifications:
                    self.listening = True
                    retry_s = LISTEN_RETRY_S
                    self._notified()
                    async for _payload in notifications:
                        self._notified()
            except ListenFailed as exc:
                log.debug("LISTEN %s: %s", self._channel, exc)
            except Exception:
                # A surprise here (a driver error, a bug) must not restart the store and
                # send every write to the spool: the relay logs it and listens again.
                log.exception("LISTEN %s failed; listening again", self._channel)
            finally:
                self.listening = False
            await trio.sleep(retry_s)
            retry_s = min(retry_s * 2, LISTEN_RETRY_MAX_S)
