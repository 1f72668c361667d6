"""The store holds the one LISTEN connection for routing changes and relays each into
the routing actor's inbox (against a real PostgreSQL): once on connecting, for every
change committed, and again after the connection is lost and made anew."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio_asyncio

from actors.store.actor import StoreActor
from actors.store.db import open_database
from actors.store.notify import Relay
from engine.lifecycle import StopSignal
from engine.mailbox import Mailbox, OverflowPolicy
from engine.messages import RefreshRouting, StoreWrite

WAIT_S = 30.0


async def sql(dsn: str, statement: str) -> object:
    async with open_database(dsn, connect_timeout_s=5) as db:
        return await db.fetchval(statement, timeout_s=5)


async def next_reload(routing: Mailbox[RefreshRouting]) -> RefreshRouting:
    """The next reload request, and any that came with it (one reload serves all)."""
    request = await routing.receive()
    routing.drain_nowait()
    return request


async def test_the_store_relays_routing_changes_to_the_routing_inbox(
    fresh_database: str, tmp_path: Path
) -> None:
    inbox: Mailbox[StoreWrite] = Mailbox("store", 8, OverflowPolicy.BLOCK)
    routing: Mailbox[RefreshRouting] = Mailbox("routing", 16, OverflowPolicy.BLOCK)
    store = StoreActor(fresh_database, inbox, spool_dir=tmp_path, routing_changes=routing)
    stop = StopSignal()
    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run, stop)
            on_connect = await next_reload(routing)  # whatever changed before it listened
            listening = store.statistics().routing_listening
            await sql(
                fresh_database,
                "INSERT INTO projects (id, name, timezone) VALUES ('acme', 'A', 'UTC')",
            )
            on_change = await next_reload(routing)
            killed = await sql(
                fresh_database,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            )
            on_reconnect = await next_reload(routing)
            await sql(fresh_database, "UPDATE projects SET name = 'B' WHERE id = 'acme'")
            after_reconnect = await next_reload(routing)
            stop.request()
    assert listening
    assert killed == 1
    # A notification carries no reply: it asks for a reload, nobody waits on it.
    assert on_connect == on_change == on_reconnect == after_reconnect == RefreshRouting()
    assert not store.statistics().routing_listening


async def test_a_surprise_in_the_relay_is_logged_and_the_relay_listens_again(
    fresh_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The relay runs inside the store's task group: an error it did not expect (here the
    subscriber's callback failing once) must not take the store down with it."""
    calls: list[float] = []
    again = trio.Event()

    def notified() -> None:
        calls.append(trio.current_time())
        if len(calls) == 1:
            raise RuntimeError("a bug in the subscriber")
        again.set()

    relay = Relay(fresh_database, "afterhours_routing", notified)
    with trio.fail_after(WAIT_S):
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            nursery.start_soon(relay.run)
            await again.wait()
            assert relay.listening
            nursery.cancel_scope.cancel()
    assert len(calls) == 2  # the failed first call, then the one after reconnecting
    assert "LISTEN afterhours_routing failed; listening again" in caplog.text
