"""The routing actor: keeps this instance's routing snapshot (engine/routing.py) fresh.

Call setup reads the snapshot synchronously and never waits on PostgreSQL. This actor
loads it before it reports started, then replaces it whole when the tables change:

- a ``RefreshRouting`` from the store wakes it when any instance commits a change (the
  trigger of migration 0005 notifies, and the store, which holds the one ``LISTEN``
  connection, relays it here), so instances agree within a reload;
- every ``check_interval_s`` it reads the version (one tiny query), in case a
  notification was lost with a dropped listening connection;
- a ``RefreshRouting`` with a reply (the admin API, after a write) reloads at once and
  answers with the version loaded: an operator reads their own write on this instance.

Loads and version checks go through the store's call-setup lane, never behind analytics
or admin work. When PostgreSQL is away the last snapshot stays in force (calls to known
numbers are still answered) and the actor keeps trying; nothing here is fatal.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from engine.errors import StartupError
from engine.messages import RefreshRouting
from engine.routing import EMPTY_SNAPSHOT, RoutingSnapshot
from engine.store_queries import LoadRouting, RoutingVersion, StoreUnavailable, ask_store

if TYPE_CHECKING:
    from engine.lifecycle import StopSignal
    from engine.mailbox import Mailbox, Outbox
    from engine.store_queries import StoreQuery

log = logging.getLogger("afterhours.routing")

CHECK_INTERVAL_S = 1.0
LOAD_TIMEOUT_S = 5.0
VERSION_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class RoutingStatistics:
    version: int
    projects: int
    numbers: int
    loaded_at_s: float  # Trio clock
    reloads_total: int
    failures_total: int
    last_error: str | None


class RoutingActor:
    def __init__(
        self,
        inbox: Mailbox[RefreshRouting],
        setup: Outbox[StoreQuery],
        *,
        check_interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self._inbox = inbox
        self._setup = setup
        self._check_interval_s = check_interval_s
        self._snapshot = EMPTY_SNAPSHOT
        self._loaded_at_s = 0.0
        self._reloads_total = 0
        self._failures_total = 0
        self._last_error: str | None = None

    def snapshot(self) -> RoutingSnapshot:
        """The current snapshot (frozen: it never changes under the reader)."""
        return self._snapshot

    def statistics(self) -> RoutingStatistics:
        snapshot = self._snapshot
        return RoutingStatistics(
            version=snapshot.version,
            projects=len(snapshot.projects),
            numbers=len(snapshot.numbers),
            loaded_at_s=self._loaded_at_s,
            reloads_total=self._reloads_total,
            failures_total=self._failures_total,
            last_error=self._last_error,
        )

    async def run(self, stop: StopSignal, *, task_status: trio.TaskStatus[None]) -> None:
        # The first start: no call can be routed without a snapshot (the store has just
        # reached the database, so this normally takes milliseconds).
        if self._snapshot is EMPTY_SNAPSHOT and not await self._reload():
            raise StartupError(f"cannot load the routing tables: {self._last_error}")
        # A restart keeps the snapshot it had: calls go on being routed meanwhile.
        task_status.started()
        await self._serve(stop)

    async def _serve(self, stop: StopSignal) -> None:
        while not stop.requested:
            requests: list[RefreshRouting] = []
            with trio.move_on_after(self._check_interval_s):
                first = await self._inbox.receive_until(stop)
                if first is None:
                    return
                requests = [first, *self._inbox.drain_nowait()]  # one reload serves all
            if requests:
                await self._reload()
            else:
                await self._check_version()
            for request in requests:
                if request.reply is not None:
                    with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                        request.reply.send_nowait(self._snapshot.version)

    async def _check_version(self) -> None:
        try:
            version = await ask_store(self._setup, RoutingVersion(), timeout_s=VERSION_TIMEOUT_S)
        except StoreUnavailable as exc:
            self._failed(exc)
            return
        if version != self._snapshot.version:
            await self._reload()

    async def _reload(self) -> bool:
        try:
            snapshot = await ask_store(self._setup, LoadRouting(), timeout_s=LOAD_TIMEOUT_S)
        except StoreUnavailable as exc:
            self._failed(exc)
            return False
        if self._last_error is not None:
            log.info(
                "routing tables reloaded (version %d) after: %s", snapshot.version, self._last_error
            )
        self._snapshot = snapshot
        self._loaded_at_s = trio.current_time()
        self._reloads_total += 1
        self._last_error = None
        return True

    def _failed(self, exc: Exception) -> None:
        self._failures_total += 1
        if self._last_error is None:
            log.warning(
                "routing tables not refreshed (%s): calls are routed from the snapshot of "
                "version %d",
                exc,
                self._snapshot.version,
            )
        self._last_error = str(exc)


async def refresh_routing(inbox: Outbox[RefreshRouting], *, timeout_s: float) -> int | None:
    """Ask the routing actor to reload now; the version it loaded, or None if it did not
    answer in time (the change is in PostgreSQL and arrives with the next check)."""
    reply_send, reply_receive = trio.open_memory_channel[int](1)
    with trio.move_on_after(timeout_s), reply_receive:
        await inbox.send(RefreshRouting(reply_send))
        return await reply_receive.receive()
    return None
